"""The model's own emotion answer (Tak et al. 2025): at the last prompt position, the logits of
each label word's first token; the answer is the label of highest logit.

A label's word is its name (or the dataset's `answer_words` entry for it), tokenised as it
would follow the prompt: the first token of the word after the template's text that follows
`{text}` ("Answer:" for the named templates), with a space between them unless that text ends in
whitespace. The answers are read in
the extraction's own forward pass (extract.HookedRun with `answer_tokens`): the LM head is
applied at the last prompt position only.

Answers table (results/answers/{model}/{dataset}.parquet), one row per prepared-table row, in
its order: row, id, label_id, label (the truth), answer_id, answer (the label of highest
label-word logit), correct, top1_token (the model's unrestricted most likely next token,
decoded), top1_is_label_word, then one Float32 column `logit_<label>` per label in label-id
order. Its parquet metadata holds `answer_words` (JSON {label: word}) and `answer_token_ids`
(JSON {label: token id}). Its scores: answer_metrics.py.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl

from .prompts import template_parts
from .errors import ConfigError, DataError

ANSWERS_FILE = "answers.parquet"  # in the folder of the extraction part that reads a model's answers
CONTEXT = "Answer:"  # what a label word is tokenised after by default (the named templates' ending)


def label_words(labels: Sequence[str], answer_words: Mapping[str, str] | None = None) -> dict[str, str]:
    """{label: the word scored for it}: the label's name unless `answer_words` gives one (its
    keys must be labels of the dataset)."""
    answer_words = dict(answer_words or {})
    if unknown := sorted(set(answer_words) - set(labels)):
        raise ConfigError(f"answer_words names labels {unknown} that the dataset does not have; its labels are "
                          f"{list(labels)}.")
    return {label: answer_words.get(label, label) for label in labels}


def prompt_ending(template: str) -> str:
    """The text a template puts after the text: what the model's answer follows."""
    return template_parts(template)[1]


def first_token(tokenizer, word: str, context: str = CONTEXT) -> int:
    """The id of the first token of `word` as it follows `context` (with a space between unless the
    context ends in whitespace): a tokenizer that merges the space into the word, or marks word
    starts, then gives the token the model would emit."""
    separator = "" if not context or context[-1].isspace() else " "
    before = tokenizer(context, add_special_tokens=False)["input_ids"]
    continued = tokenizer(f"{context}{separator}{word}", add_special_tokens=False)["input_ids"]
    if continued[:len(before)] == before and len(continued) > len(before):
        return int(continued[len(before)])
    alone = tokenizer(f"{separator}{word}", add_special_tokens=False)["input_ids"]
    if not alone:
        raise DataError(f"the answer word {word!r} tokenises to nothing; give the label another word in the "
                        "dataset's `answer_words`.")
    return int(alone[0])


def label_tokens(tokenizer, words: Mapping[str, str], context: str = CONTEXT) -> dict[str, int]:
    """{label: first token id of its word after `context`}; two labels whose words share a first
    token cannot be told apart by the answer, and are refused, named; so is a word the tokenizer
    does not know (its unknown token)."""
    tokens = {label: first_token(tokenizer, word, context) for label, word in words.items()}
    by_token: dict[int, list[str]] = {}
    for label, token in tokens.items():
        by_token.setdefault(token, []).append(label)
    if clashes := [labels for labels in by_token.values() if len(labels) > 1]:
        unknown = getattr(tokenizer, "unk_token_id", None)
        shown = "; ".join(
            f"{', '.join(repr(f'{label} -> {words[label]}') for label in labels)} "
            f"{'both' if len(labels) == 2 else 'all'} start with token {tokens[labels[0]]} "
            f"({tokenizer.decode([tokens[labels[0]]])!r}"
            f"{', the unknown token: the tokenizer does not know these words' if tokens[labels[0]] == unknown else ''})"
            for labels in clashes)
        raise DataError(f"label words share a first token, so the model's answer cannot tell them apart: {shown}. "
                        "Give all but one of each group another word in the dataset's `answer_words` (or set "
                        "`answers: false`).")
    if unknown_words := [f"{label} -> {words[label]}" for label, token in tokens.items()
                         if token == getattr(tokenizer, "unk_token_id", None)]:
        raise DataError(f"the tokenizer does not know the label word {unknown_words[0]!r} (it becomes the unknown "
                        "token); give the label another word in the dataset's `answer_words` (or set "
                        "`answers: false`).")
    return tokens


def answer_table(ids: Sequence[str], label_ids: np.ndarray, classes: Mapping[int, str], label_logits: np.ndarray,
                 top1: np.ndarray, tokenizer, tokens: Mapping[str, int]) -> pl.DataFrame:
    """The answers table (see the module) from the label-word logits [N, L] (one column per
    entry of `classes`, {label id: label}, in its order) and the unrestricted top-1 token ids [N]."""
    class_ids, names = np.asarray(list(classes)), list(classes.values())
    answer_id = class_ids[label_logits.argmax(1)]
    top1 = np.asarray(top1)
    decoded = {token: tokenizer.decode([token]) for token in set(top1.tolist())}
    return pl.DataFrame({
        "row": np.arange(len(ids)), "id": list(ids),
        "label_id": label_ids, "label": [classes[i] for i in label_ids.tolist()],
        "answer_id": answer_id, "answer": [classes[i] for i in answer_id.tolist()], "correct": answer_id == label_ids,
        "top1_token": [decoded[token] for token in top1.tolist()],
        "top1_is_label_word": np.isin(top1, list(tokens.values())),
        **{f"logit_{name}": label_logits[:, i].astype(np.float32) for i, name in enumerate(names)},
    }, schema_overrides={"row": pl.Int64, "label_id": pl.Int64, "answer_id": pl.Int64})


def write_answers(table: pl.DataFrame, path: str, words: Mapping[str, str], tokens: Mapping[str, int]) -> None:
    table.write_parquet(path, metadata={"answer_words": json.dumps(dict(words)),
                                        "answer_token_ids": json.dumps(dict(tokens))})
