"""The model's own emotion answer (Tak et al. 2025): at the last prompt position, the logits of
each label word's first token; the answer is the label of highest logit.

A label's word is its name (or the dataset's `answer_words` entry for it), tokenised as it
would follow the prompt: the first token of " word" after "Answer:". The answers are read in
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

from .errors import ConfigError, DataError

CONTEXT = "Answer:"  # what a label word is tokenised after (the templates' last word)


def label_words(labels: Sequence[str], answer_words: Mapping[str, str] | None = None) -> dict[str, str]:
    """{label: the word scored for it}: the label's name unless `answer_words` gives one (its
    keys must be labels of the dataset)."""
    answer_words = dict(answer_words or {})
    if unknown := sorted(set(answer_words) - set(labels)):
        raise ConfigError(f"answer_words names labels {unknown} that the dataset does not have; its labels are "
                          f"{list(labels)}.")
    return {label: answer_words.get(label, label) for label in labels}


def first_token(tokenizer, word: str) -> int:
    """The id of the first token of " word" as it follows CONTEXT (so that a tokenizer which
    merges the space into the word, or marks word starts, gives the token the model would emit)."""
    context = tokenizer(CONTEXT, add_special_tokens=False)["input_ids"]
    continued = tokenizer(f"{CONTEXT} {word}", add_special_tokens=False)["input_ids"]
    if continued[:len(context)] == context and len(continued) > len(context):
        return int(continued[len(context)])
    alone = tokenizer(f" {word}", add_special_tokens=False)["input_ids"]
    if not alone:
        raise DataError(f"the answer word {word!r} tokenises to nothing; give the label another word in the "
                        "dataset's `answer_words`.")
    return int(alone[0])


def label_tokens(tokenizer, words: Mapping[str, str]) -> dict[str, int]:
    """{label: first token id of its word}; two labels whose words share a first token cannot be
    told apart by the answer, and are refused, named."""
    tokens = {label: first_token(tokenizer, word) for label, word in words.items()}
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
