"""Control tasks (Hewitt & Liang 2019, adapted to texts): labels a probe can only learn by
memorising the input's surface, never from what the text means.

- "first_word": a fixed seeded map from a text's first word (lower-cased) to the dataset's
  classes. Word types are taken from the most to the least frequent (ties in a seeded random
  order) and each goes to the class furthest below its real share of the texts (ties between
  classes in a seeded random order), so the control classes keep the real class proportions as
  closely as whole word types allow. selectivity = probe accuracy - control accuracy.
- "first_word_top13": Tak et al. 2025's control: which of the 13 most frequent first words a
  text starts with, every other first word one more class ("other"; 14 classes).

A text's first word is its first run of word characters (regex \\w+), lower-cased; a text with
none has the first word "".
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

from .errors import DataError

log = logging.getLogger(__name__)

CONTROL_TASKS = ("first_word", "first_word_top13")
TOP_WORDS = 13
_WORD = re.compile(r"\w+")


def first_word(text: str) -> str:
    match = _WORD.search(text)
    return match.group(0).lower() if match else ""


def control_labels(task: str, texts: Sequence[str], labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """The control task's label id per text (int64 [N])."""
    words = [first_word(text) for text in texts]
    if task == "first_word":
        control = _first_word_map(words, np.asarray(labels), seed)
        real, mapped = (np.unique(values, return_counts=True)[1].max() / len(values) for values in (labels, control))
        if mapped > 2 * real:
            log.warning("control task first_word: the largest control class holds %.0f%% of the texts (the largest "
                        "real class %.0f%%): few first words cover most texts, so the control is a far easier task "
                        "than the real one and selectivity compares tasks of different difficulty.",
                        100 * mapped, 100 * real)
        return control
    if task == "first_word_top13":
        top = [word for word, _ in sorted(Counter(words).items(), key=lambda item: (-item[1], item[0]))[:TOP_WORDS]]
        index = {word: i for i, word in enumerate(top)}
        return np.array([index.get(word, len(top)) for word in words], dtype=np.int64)
    raise DataError(f"unknown control task {task!r}; choose one of {CONTROL_TASKS}.")


def _first_word_map(words: list[str], labels: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    classes, class_counts = np.unique(labels, return_counts=True)
    counts = Counter(words)
    types = sorted(counts)
    order = rng.permutation(len(types))  # the seeded tie order between equally frequent words
    by_frequency = sorted(range(len(types)), key=lambda i: (-counts[types[i]], order[i]))
    priority = rng.permutation(len(classes))  # the seeded tie order between classes
    deficit = class_counts.astype(float)
    assigned = {}
    for i in by_frequency:
        target = max(range(len(classes)), key=lambda c: (deficit[c], -priority[c]))
        assigned[types[i]] = classes[target]
        deficit[target] -= counts[types[i]]
    return np.array([assigned[word] for word in words], dtype=np.int64)
