"""Classification probes: standardisation + multinomial logistic regression, stratified k-fold CV."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import polars as pl
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from .errors import DataError

log = logging.getLogger(__name__)

PROBE_COLUMNS = {"probe": pl.String, "fold": pl.Int64, "metric": pl.String, "value": pl.Float64}


def make_logistic_probe(C: float = 1.0, max_iter: int = 1000, seed: int = 0) -> Pipeline:
    return Pipeline([
        ("standardise", StandardScaler()),
        ("logreg", LogisticRegression(C=C, max_iter=max_iter, random_state=seed)),
    ])


def check_probe_inputs(X: np.ndarray, y: np.ndarray, cv_folds: int) -> None:
    """Fail with a message naming the problem before any fitting starts."""
    if X.ndim != 2 or len(X) != len(y):
        raise DataError(f"probe inputs must be X [N, H] and y [N]; got {X.shape} and {y.shape}.")
    if not np.isfinite(X).all():
        raise DataError("activations contain NaN or inf; the extraction is broken (check the model's dtype).")
    labels, counts = np.unique(y, return_counts=True)
    if len(labels) < 2:
        raise DataError(f"only one label ({labels.tolist()}) present; a probe needs at least two classes.")
    too_few = {int(label): int(n) for label, n in zip(labels, counts) if n < cv_folds}
    if too_few:
        raise DataError(
            f"label ids {too_few} (id: count) have fewer examples than probe.cv_folds={cv_folds}; "
            "lower cv_folds, or use more data (raise max_per_class)."
        )


def _scores(y_true, y_pred) -> dict[str, float]:
    return {"accuracy": accuracy_score(y_true, y_pred),
            "macro_f1": f1_score(y_true, y_pred, average="macro", zero_division=0)}


def cross_validate_probe(X: np.ndarray, y: np.ndarray, cv_folds: int = 5, seed: int = 0,
                         C: float = 1.0, max_iter: int = 1000) -> pl.DataFrame:
    """Per-fold held-out scores of the logistic probe and of the train-fold majority class."""
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y)
    check_probe_inputs(X, y, cv_folds)
    rows, unconverged = [], 0
    splitter = StratifiedKFold(n_splits=cv_folds, shuffle=True, random_state=seed)
    for fold, (train, test) in enumerate(splitter.split(X, y)):
        probe = make_logistic_probe(C, max_iter, seed)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            probe.fit(X[train], y[train])
        unconverged += any(issubclass(w.category, ConvergenceWarning) for w in caught)
        labels, counts = np.unique(y[train], return_counts=True)
        majority = np.full(len(test), labels[np.argmax(counts)])
        for name, predicted in (("logreg", probe.predict(X[test])), ("majority", majority)):
            rows += [{"probe": name, "fold": fold, "metric": metric, "value": float(value)}
                     for metric, value in _scores(y[test], predicted).items()]
    if unconverged:
        log.warning("%d of %d folds stopped at max_iter=%d before converging; raise probe.max_iter "
                    "or lower probe.C", unconverged, cv_folds, max_iter)
    return pl.DataFrame(rows, schema=PROBE_COLUMNS)


def fit_predict_torch(X: np.ndarray, y: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]],
                      C: float = 1.0, max_iter: int = 1000, device: str = "cpu") -> list[np.ndarray]:
    """All folds' standardised multinomial logistic regressions as one batched L-BFGS problem.

    Minimises, per fold, the same objective as sklearn's LogisticRegression(C) on
    standardised inputs: sum of cross-entropies + ||W||^2 / (2C), intercept unpenalised
    (divided by n_train for conditioning; the minimiser is unchanged). Folds share no
    parameters, so the joint optimum is each fold's optimum. Returns test predictions per fold.
    """
    import torch

    classes, y_index = np.unique(y, return_inverse=True)
    n_folds, (n, h), k = len(folds), X.shape, len(classes)
    X_t = torch.as_tensor(X, dtype=torch.float64, device=device)
    y_t = torch.as_tensor(y_index, device=device)
    train_mask = torch.zeros((n_folds, n), dtype=torch.float64, device=device)
    for f, (train, _) in enumerate(folds):
        train_mask[f, torch.as_tensor(train, device=device)] = 1.0
    n_train = train_mask.sum(1, keepdim=True)
    mean = train_mask @ X_t / n_train                                        # [F, H]
    var = train_mask @ (X_t * X_t) / n_train - mean * mean
    scale = torch.where(var > 0, var.clamp_min(0).sqrt(), torch.ones_like(var))
    Z = (X_t[None] - mean[:, None]) / scale[:, None]                         # [F, N, H]
    W = torch.zeros((n_folds, h, k), dtype=torch.float64, device=device, requires_grad=True)
    b = torch.zeros((n_folds, 1, k), dtype=torch.float64, device=device, requires_grad=True)
    onehot = torch.nn.functional.one_hot(y_t, k).to(torch.float64)           # [N, K]
    optimiser = torch.optim.LBFGS([W, b], max_iter=max_iter, history_size=20, tolerance_grad=1e-7,
                                  tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def objective():
        optimiser.zero_grad()
        logits = torch.bmm(Z, W) + b                                         # [F, N, K]
        nll = -(torch.log_softmax(logits, dim=-1) * onehot).sum(-1)          # [F, N]
        loss = ((nll * train_mask).sum(1) + (W * W).sum((1, 2)) / (2 * C)) / n_train.squeeze(1)
        loss = loss.sum()
        loss.backward()
        return loss

    optimiser.step(objective)
    with torch.no_grad():
        predicted = (torch.bmm(Z, W) + b).argmax(-1).cpu().numpy()
    return [classes[predicted[f, test]] for f, (_, test) in enumerate(folds)]
