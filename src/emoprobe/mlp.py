"""Non-linear probes: one hidden layer (ReLU) on standardised activations.

torch backend (`proba_mlp_torch`): every (position, fold) problem of a probe job is one MLP, all
trained at once: the same mini-batch of rows goes through every problem (one batched matrix
product per layer), and each problem's loss counts only its own training rows in the batch.
AdamW (decoupled weight decay) on the mean cross-entropy; early stopping on a validation slice
of each fold's training texts (`validation_fraction`, seeded, copies of a text on one side):
after every epoch each problem's validation loss is computed, its best weights kept, and it
stops learning once `patience` epochs pass without a new best; the best weights score the
fold's test rows. Inputs are standardised with the fold's training rows (not the validation
slice's own statistics: they are training rows too). On CUDA when present.

sklearn backend (`proba_mlp_sklearn`): StandardScaler + MLPClassifier(hidden_layer_sizes=
(hidden,)) per fold, Tak et al. 2025's non-linear probe (they used 32 hidden units), with
sklearn's own early stopping on the same validation fraction; for comparison.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np

from .folds import Folds

log = logging.getLogger(__name__)


def validation_split(folds: Folds, groups: np.ndarray, fraction: float, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per fold (fit rows, validation rows): a seeded `fraction` of the fold's training texts
    (all copies of a text on one side) held back for early stopping."""
    _, codes = np.unique(np.asarray(groups), return_inverse=True)
    splits = []
    for fold, (train, _) in enumerate(folds):
        texts = np.unique(codes[train])
        rng = np.random.default_rng([seed, fold, 1])
        held = rng.choice(texts, size=max(1, round(fraction * len(texts))), replace=False)
        is_validation = np.isin(codes[train], held)
        splits.append((train[~is_validation], train[is_validation]))
    return splits


def proba_mlp_torch(X: np.ndarray, y: np.ndarray, folds: Folds, hidden: int = 256, weight_decay: float = 0.01,
                    lr: float = 1e-3, batch_size: int = 256, max_epochs: int = 30, patience: int = 3,
                    validation_fraction: float = 0.1, seed: int = 0, groups: np.ndarray | None = None,
                    fold_labels: np.ndarray | None = None, device: str | None = None) -> np.ndarray:
    """Out-of-fold class probabilities [P, N, K] of the batched MLPs for X [P, N, H] (or [N, H]);
    columns follow np.unique(y), rows in no test fold are NaN. fold_labels [F, N]: the labels
    fold f trains (and early-stops) on; default y. groups: the texts (default: every row its own)."""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    X = np.asarray(X, dtype=np.float32)
    X = X[None] if X.ndim == 2 else X
    (n_positions, n, h), n_folds = X.shape, len(folds)
    classes, y_index = np.unique(y, return_inverse=True)
    k = len(classes)
    labels = (np.broadcast_to(y_index, (n_folds, n)) if fold_labels is None
              else np.searchsorted(classes, fold_labels))
    splits = validation_split(folds, np.arange(n) if groups is None else groups, validation_fraction, seed)
    fit_mask = np.zeros((n_folds, n), dtype=np.float32)
    validation_mask = np.zeros((n_folds, n), dtype=np.float32)
    for f, (fit_rows, validation_rows) in enumerate(splits):
        fit_mask[f, fit_rows] = 1.0
        validation_mask[f, validation_rows] = 1.0
    generator = torch.Generator().manual_seed(seed)

    X_t = torch.as_tensor(X, device=device)                                             # [P, N, H]
    train_mask = torch.as_tensor(fit_mask + validation_mask, device=device)             # [F, N]
    n_train = train_mask.sum(1)
    mean = torch.einsum("fn,pnh->pfh", train_mask, X_t) / n_train[None, :, None]        # [P, F, H]
    var = torch.einsum("fn,pnh->pfh", train_mask, X_t * X_t) / n_train[None, :, None] - mean ** 2
    inv_scale = torch.where(var > 1e-12 * (1 + mean ** 2), var.clamp_min(1e-30).rsqrt(), torch.zeros_like(var))
    target = torch.as_tensor(np.ascontiguousarray(labels.T), device=device)             # [N, F]
    fit_w = torch.as_tensor(fit_mask.T.copy(), device=device)                           # [N, F]
    validation_w = torch.as_tensor(validation_mask.T.copy(), device=device)

    bound1, bound2 = 1 / np.sqrt(h), 1 / np.sqrt(hidden)  # torch.nn.Linear's default initialisation
    def uniform(shape, bound):
        return ((torch.rand(shape, generator=generator) * 2 - 1) * bound).to(device).requires_grad_(True)
    shape = (n_positions, n_folds)
    params = [uniform((*shape, h, hidden), bound1), uniform((*shape, hidden), bound1),
              uniform((*shape, hidden, k), bound2), uniform((*shape, k), bound2)]
    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)

    def logits(rows, weights):
        W1, b1, W2, b2 = weights
        z = (X_t[:, rows, None, :] - mean[:, None]) * inv_scale[:, None]                 # [P, B, F, H]
        hidden_units = torch.relu(torch.einsum("pbfh,pfhj->pbfj", z, W1) + b1[:, None])
        return torch.einsum("pbfj,pfjk->pbfk", hidden_units, W2) + b2[:, None]          # [P, B, F, K]

    def losses(rows, weights, row_weights):
        """Per-problem mean cross-entropy [P, F] over the rows that `row_weights` [N, F] counts."""
        out = logits(rows, weights)
        nll = torch.nn.functional.cross_entropy(out.permute(0, 3, 1, 2), target[rows][None].expand(n_positions, -1, -1),
                                                reduction="none")                      # [P, B, F]
        w = row_weights[rows]
        return (nll * w).sum(1) / w.sum(0).clamp_min(1.0)

    validation_rows = torch.as_tensor(np.flatnonzero(validation_mask.any(0)), device=device)  # any fold's

    def validation_loss(weights):
        with torch.no_grad():
            return sum(losses(rows, weights, validation_w) * validation_w[rows].sum(0)
                       for rows in validation_rows.split(1024)) / validation_w.sum(0).clamp_min(1.0)

    best = [p.detach().clone() for p in params]
    best_loss = validation_loss(params)
    waited = torch.zeros(shape, dtype=torch.long, device=device)
    learning = torch.ones(shape, dtype=torch.bool, device=device)
    epochs = 0
    for epochs in range(1, max_epochs + 1):
        order = torch.randperm(n, generator=generator).to(device)
        for rows in order.split(batch_size):
            optimiser.zero_grad()
            (losses(rows, params, fit_w) * learning).sum().backward()
            optimiser.step()
        current = validation_loss(params)
        improved = learning & (current < best_loss)
        for kept, now in zip(best, params):
            kept.copy_(torch.where(improved.reshape(*shape, *[1] * (now.ndim - 2)), now.detach(), kept))
        best_loss = torch.where(improved, current, best_loss)
        waited = torch.where(improved, 0, waited + 1)
        learning &= waited < patience
        if not bool(learning.any()):
            break
    log.info("MLP probes: %d epochs, %d of %d (position, fold) problems still improving at the end", epochs,
             int(learning.sum()), learning.numel())
    if bool(learning.any()):
        log.warning("%d of %d MLP problems were still improving after max_epochs=%d; raise max_epochs",
                    int(learning.sum()), learning.numel(), max_epochs)
    # AdamW's decoupled decay also shrinks the weights of problems that stopped learning (their
    # gradients are masked out), which is why the best weights, not the last, are used.
    out = np.full((n_positions, n, k), np.nan)
    with torch.no_grad():
        for f, (_, test) in enumerate(folds):
            rows = torch.as_tensor(test, device=device)
            out[:, test] = torch.softmax(logits(rows, best)[:, :, f].double(), -1).cpu().numpy()
    return out


def proba_mlp_sklearn(X: np.ndarray, y: np.ndarray, folds: Folds, hidden: int = 32, weight_decay: float = 1e-4,
                      lr: float = 1e-3, batch_size: int = 200, max_epochs: int = 200, patience: int = 10,
                      validation_fraction: float = 0.1, seed: int = 0,
                      fold_labels: np.ndarray | None = None) -> np.ndarray:
    """Out-of-fold class probabilities [N, K] of StandardScaler + sklearn's MLPClassifier (one
    hidden layer of `hidden` ReLU units, L2 penalty alpha = weight_decay, Adam at learning rate
    lr, early stopping after `patience` epochs without gain on a `validation_fraction` of the
    training rows), one fit per fold; the defaults are sklearn's, with Tak et al.'s 32 units."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X = np.asarray(X, dtype=np.float32)
    classes = np.unique(y)
    proba = np.full((len(y), len(classes)), np.nan)
    for fold, (train, test) in enumerate(folds):
        probe = make_pipeline(StandardScaler(), MLPClassifier(
            hidden_layer_sizes=(hidden,), alpha=weight_decay, learning_rate_init=lr, batch_size=batch_size,
            max_iter=max_epochs, early_stopping=True, n_iter_no_change=patience,
            validation_fraction=validation_fraction, random_state=seed))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            probe.fit(X[train], (y if fold_labels is None else fold_labels[fold])[train])
        proba[test] = 0.0
        proba[np.ix_(test, np.searchsorted(classes, probe.classes_))] = probe.predict_proba(X[test])
    return proba
