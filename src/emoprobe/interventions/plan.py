"""Which layers, texts and donors an experiment uses: torch-free, so that the workflow's DAG
can plan with it."""

from __future__ import annotations

import numpy as np
import polars as pl

ABLATION_KINDS = ("zero", "mean", "random")  # what an ablated activation becomes (ablation.py)


def centred_span(centre: int, span: int, n_layers: int) -> tuple[int, ...]:
    """The `span` consecutive layers centred on `centre` (an even span reaches one further up),
    clipped to the blocks 1..n_layers."""
    first = centre - (span - 1) // 2
    return tuple(layer for layer in range(first, first + span) if 1 <= layer <= n_layers)


def donor_rows(rows: np.ndarray, n_rows: int, seed: int) -> np.ndarray:
    """For each sampled row, a seeded donor: another row of the dataset (of `n_rows`), never itself."""
    rng = np.random.default_rng(seed)
    donors = rng.integers(0, n_rows - 1, len(rows))
    return donors + (donors >= rows)  # skip the row itself


def sample_texts(answers: pl.DataFrame, max_texts: int, seed: int) -> np.ndarray:
    """Up to `max_texts` rows of the answers table, stratified by label (each label's share of the
    sample as of the dataset, by largest remainder), within each label the texts the model answered
    correctly first, each group in seeded random order; sorted."""
    rng = np.random.default_rng(seed)
    if answers.height <= max_texts:
        return np.arange(answers.height)
    counts = answers.group_by("label_id").len().sort("label_id")
    exact = counts["len"].to_numpy() * max_texts / answers.height
    quota = np.floor(exact).astype(int)
    quota[np.argsort(-(exact - quota), kind="stable")[:max_texts - quota.sum()]] += 1
    chosen = []
    for label_id, take in zip(counts["label_id"].to_list(), quota):
        of_label = answers.with_row_index("index").filter(label_id=label_id)
        correct = of_label.filter("correct")["index"].to_numpy()
        wrong = of_label.filter(~pl.col("correct"))["index"].to_numpy()
        chosen.append(np.concatenate([rng.permutation(correct), rng.permutation(wrong)])[:take])
    return np.sort(np.concatenate(chosen))


def text_pairs(labels: np.ndarray, n_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(sources, targets): `n_pairs` seeded pairs of indices into `labels` whose labels differ
    (targets drawn uniformly, each source uniformly among the texts of another label)."""
    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        raise ValueError("pairs of texts with different labels need at least two labels")
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, len(labels), n_pairs)
    sources = np.array([rng.choice(np.flatnonzero(labels != labels[target])) for target in targets])
    return sources, targets
