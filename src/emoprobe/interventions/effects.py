"""What an edit does to the model's answer, from the label-word logits at the last prompt position
of the clean and the edited run of the same texts (the distribution is the softmax over the label
words' logits; the answer its argmax)."""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax
from scipy.stats import spearmanr

from .. import bootstrap

METRICS = ("accuracy_change", "logprob_change", "flip_rate", "kl")
PATCHING_METRICS = ("flip_to_source", "normalised_logit_difference")
PROMOTION_METRICS = ("promotion_rate", "logprob_change")
STEERING_METRICS = ("agreement", "logprob_change")


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


def patching_effects(target: np.ndarray, source: np.ndarray, patched: np.ndarray, source_labels: np.ndarray,
                     target_labels: np.ndarray, seed: int = 0,
                     n_resamples: int = 1000) -> dict[str, tuple[float, float, float]]:
    """{metric: (value, 95% CI low, high)} over pairs, from the clean target's, the clean source's and
    the patched target's logits [P, L] and the labels (column indices): flip_to_source, the share
    of pairs whose patched answer is the source's label; normalised_logit_difference, how far the
    gap g = logit[source label] - logit[target label] moved from the clean target's to the clean
    source's: mean(g_patched - g_target) / mean(g_source - g_target) (a ratio of means, which a
    pair whose clean gaps nearly agree cannot blow up), 0 = unmoved, 1 = the source's gap."""
    pairs = np.arange(len(source_labels))

    def gap(logits):
        return logits[pairs, source_labels].astype(np.float64) - logits[pairs, target_labels]

    flipped = (patched.argmax(1) == source_labels).astype(np.float64)
    return {"flip_to_source": bootstrap.mean_ci(flipped, n_resamples, seed),
            "normalised_logit_difference": bootstrap.ratio_ci(gap(patched) - gap(target), gap(source) - gap(target),
                                                              n_resamples, seed)}


def promotion_effects(clean: np.ndarray, edited: np.ndarray, emotions: np.ndarray, seed: int = 0,
                      n_resamples: int = 1000) -> dict[int | None, dict[str, tuple[float, float, float]]]:
    """{emotion column: {metric: (value, 95% CI low, high)}} from the clean logits [N, L] and those
    of the runs [N, E, L] that promote each of `emotions` [E] (columns; the random control's one run
    repeated for each): promotion_rate, the share of the texts whose clean answer is not the
    emotion whose edited answer is; logprob_change, the mean change of the emotion's
    log-probability over all texts. Key None: promotion_rate over all emotions (successes over
    eligible (text, emotion) pairs, texts resampled)."""
    log_clean = log_softmax(clean.astype(np.float64), 1)
    log_edited = log_softmax(edited.astype(np.float64), 2)
    eligible = clean.argmax(1)[:, None] != emotions[None, :]  # [N, E]
    success = eligible & (edited.argmax(2) == emotions[None, :])
    out = {}
    for index, emotion in enumerate(emotions):
        rate = (bootstrap.mean_ci(success[eligible[:, index], index], n_resamples, seed)
                if eligible[:, index].any() else (np.nan,) * 3)
        out[int(emotion)] = {"promotion_rate": rate,
                             "logprob_change": bootstrap.mean_ci(log_edited[:, index, emotion] - log_clean[:, emotion],
                                                                 n_resamples, seed)}
    out[None] = {"promotion_rate": bootstrap.ratio_ci(success.sum(1), eligible.sum(1), n_resamples, seed)}
    return out


def steering_effects(clean: np.ndarray, edited: np.ndarray, expected: np.ndarray, seed: int = 0,
                     n_resamples: int = 1000) -> tuple[tuple[float, float, float], list[tuple[float, float, float]]]:
    """(agreement, [logprob_change per emotion column]) of one edit's logits [N, L] against the clean
    ones: agreement, the Spearman correlation over emotions between the mean change of each
    emotion's log-probability and `expected` [L] (the change the human data expects); each with a
    percentile bootstrap CI over the texts."""
    change = log_softmax(edited.astype(np.float64), 1) - log_softmax(clean.astype(np.float64), 1)

    def agreement(means):
        return spearmanr(means, expected).statistic

    return (bootstrap.mean_statistic_ci(change, agreement, n_resamples, seed),
            [bootstrap.mean_ci(change[:, column], n_resamples, seed) for column in range(change.shape[1])])
