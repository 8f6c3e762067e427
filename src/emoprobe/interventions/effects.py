"""What an edit does to the model's answer, from the label-word logits at the last prompt position
of the clean and the edited run of the same texts (the distribution is the softmax over the label
words' logits; the answer its argmax)."""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax

from .. import bootstrap

METRICS = ("accuracy_change", "logprob_change", "flip_rate", "kl")


def effects(clean: np.ndarray, edited: np.ndarray, labels: np.ndarray, seed: int = 0,
            n_resamples: int = 1000) -> dict[str, tuple[float, float, float]]:
    """{metric: (value, 95% CI low, high)} over the N texts, logits [N, L], labels [N] (column
    indices): accuracy_change, the edited answer's accuracy minus the clean one's (paired
    bootstrap); logprob_change, the mean change in the log-probability of the true label;
    flip_rate, the share of texts whose answer changed; kl, the mean KL(clean || edited).
    Percentile bootstrap over the texts, seeded."""
    log_clean, log_edited = log_softmax(clean.astype(np.float64), 1), log_softmax(edited.astype(np.float64), 1)
    rows = np.arange(len(labels))
    answer_clean, answer_edited = clean.argmax(1), edited.argmax(1)
    per_text = {
        "logprob_change": log_edited[rows, labels] - log_clean[rows, labels],
        "flip_rate": (answer_edited != answer_clean).astype(np.float64),
        "kl": (np.exp(log_clean) * (log_clean - log_edited)).sum(1),
    }
    return {"accuracy_change": bootstrap.paired_difference_ci(labels, answer_edited, answer_clean, "accuracy",
                                                              n_resamples, seed),
            **{name: bootstrap.mean_ci(values, n_resamples, seed) for name, values in per_text.items()}}
