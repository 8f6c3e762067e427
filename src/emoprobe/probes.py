"""Classification probes: standardisation + multinomial logistic regression, stratified k-fold CV."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import polars as pl
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score
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
            "balanced_accuracy": balanced_accuracy_score(y_true, y_pred),
            "macro_f1": f1_score(y_true, y_pred, average="macro", zero_division=0)}


Folds = list[tuple[np.ndarray, np.ndarray]]


def stratified_folds(y: np.ndarray, cv_folds: int, seed: int) -> Folds:
    """Shuffled stratified k-fold (train, test) index pairs with a fixed seed."""
    splitter = StratifiedKFold(n_splits=cv_folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros((len(y), 1)), y))


def fit_predict_sklearn(X: np.ndarray, y: np.ndarray, folds: Folds, C: float = 1.0,
                        max_iter: int = 1000, seed: int = 0) -> np.ndarray:
    """Out-of-fold predictions of the sklearn Pipeline, one fit per fold."""
    predicted = np.empty_like(y)
    unconverged = 0
    for train, test in folds:
        probe = make_logistic_probe(C, max_iter, seed)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            probe.fit(X[train], y[train])
        unconverged += any(issubclass(w.category, ConvergenceWarning) for w in caught)
        predicted[test] = probe.predict(X[test])
    if unconverged:
        log.warning("%d of %d folds stopped at max_iter=%d before converging; raise probe.max_iter "
                    "or lower probe.C", unconverged, len(folds), max_iter)
    return predicted


BACKENDS = ("sklearn", "torch")


def cross_validate_probe(X: np.ndarray, y: np.ndarray, cv_folds: int = 5, seed: int = 0,
                         C: float = 1.0, max_iter: int = 1000, backend: str = "sklearn",
                         folds: Folds | None = None) -> pl.DataFrame:
    """Per-fold held-out scores of the logistic probe and of the train-fold majority class.

    `folds` defaults to stratified k-fold; pass (train, test) pairs for an official split.
    """
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y)
    check_probe_inputs(X, y, cv_folds if folds is None else 1)
    folds = stratified_folds(y, cv_folds, seed) if folds is None else folds
    if backend == "sklearn":
        predicted = fit_predict_sklearn(X, y, folds, C, max_iter, seed)
    elif backend == "torch":
        predicted = fit_predict_torch(X, y, folds, C, max_iter)[0]
    else:
        raise ValueError(f"probe backend {backend!r} is not one of {BACKENDS}")
    rows = []
    for fold, (train, test) in enumerate(folds):
        labels, counts = np.unique(y[train], return_counts=True)
        majority = np.full(len(test), labels[np.argmax(counts)])
        for name, fold_predicted in (("logreg", predicted[test]), ("majority", majority)):
            rows += [{"probe": name, "fold": fold, "metric": metric, "value": float(value)}
                     for metric, value in _scores(y[test], fold_predicted).items()]
    return pl.DataFrame(rows, schema=PROBE_COLUMNS)


def fit_predict_torch(X: np.ndarray, y: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]],
                      C: float = 1.0, max_iter: int = 1000, device: str = "cpu",
                      tolerance: float = 1e-4) -> np.ndarray:
    """Standardised multinomial logistic regressions for every (position, fold), as one batched
    L-BFGS problem in torch. X is [P, N, H] (or [N, H]); returns predictions [P, N] where
    each row's prediction comes from the fold that held it out.

    Each problem minimises sklearn's LogisticRegression(C) objective on inputs standardised
    with its training rows: mean cross-entropy + ||W||^2 / (2 C n_train), intercept
    unpenalised. Problems share no parameters, so the joint optimum is each one's optimum;
    L-BFGS stops when the largest gradient entry falls below `tolerance` (sklearn's tol).
    """
    import torch

    X = np.asarray(X, dtype=np.float32)
    X = X[None] if X.ndim == 2 else X
    classes, y_index = np.unique(y, return_inverse=True)
    (n_positions, n, h), k, n_folds = X.shape, len(classes), len(folds)
    dtype = torch.float32
    X_t = torch.as_tensor(X, device=device)                                    # [P, N, H]
    train_mask = torch.zeros((n_folds, n), dtype=dtype, device=device)
    for f, (train, _) in enumerate(folds):
        train_mask[f, torch.as_tensor(train, device=device)] = 1.0
    n_train = train_mask.sum(1)                                                # [F]
    # Per (position, fold) standardisation with training-row statistics, in float64 for accuracy.
    X64 = X_t.double()
    mean = torch.einsum("fn,pnh->pfh", train_mask.double(), X64) / n_train.double()[None, :, None]
    var = torch.einsum("fn,pnh->pfh", train_mask.double(), X64 * X64) / n_train.double()[None, :, None] - mean ** 2
    scale = torch.where(var > 1e-12, var.clamp_min(0).sqrt(), torch.ones_like(var))
    Z = ((X64[:, None] - mean[:, :, None]) / scale[:, :, None]).to(dtype)       # [P, F, N, H]
    del X64
    Z = Z.reshape(n_positions * n_folds, n, h)
    weight = (train_mask / n_train[:, None]).repeat(n_positions, 1)             # [G, N]
    penalty = (1.0 / (2 * C * n_train)).repeat(n_positions)                    # [G]
    y_t = torch.as_tensor(y_index, device=device)
    W = torch.zeros((len(Z), h, k), dtype=dtype, device=device, requires_grad=True)
    b = torch.zeros((len(Z), 1, k), dtype=dtype, device=device, requires_grad=True)
    optimiser = torch.optim.LBFGS([W, b], lr=1, max_iter=max_iter, history_size=10,
                                  tolerance_grad=tolerance, tolerance_change=1e-9,
                                  line_search_fn="strong_wolfe")

    def objective():
        optimiser.zero_grad()
        logits = torch.baddbmm(b, Z, W)                                        # [G, N, K]
        nll = torch.logsumexp(logits, -1) - logits.gather(-1, y_t.expand(len(Z), n)[..., None])[..., 0]
        loss = (nll * weight).sum() + (penalty * (W * W).sum((1, 2))).sum()
        loss.backward()
        return loss

    optimiser.step(objective)
    with torch.no_grad():
        predicted = torch.baddbmm(b, Z, W).argmax(-1).reshape(n_positions, n_folds, n).cpu().numpy()
    out = np.empty((n_positions, n), dtype=classes.dtype)
    for f, (_, test) in enumerate(folds):
        out[:, test] = classes[predicted[:, f, test]]
    return out
