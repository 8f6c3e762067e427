"""Classification probes: standardisation + logistic regression, stratified group k-fold CV."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
import polars as pl
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from . import bootstrap
from .errors import DataError
from .registry import KINDS, control_name, settings_for
from .folds import CrossValidation, Folds, assign_folds, fold_scores, held_out, shuffled_within_training, with_intervals

log = logging.getLogger(__name__)


def make_logistic_probe(C: float = 1.0, max_iter: int = 1000, seed: int = 0, standardise: bool = True) -> Pipeline:
    """StandardScaler + LogisticRegression(C) (lbfgs); with standardise=False the scaler passes
    the activations through unchanged (Tak et al.'s probe)."""
    return Pipeline([
        ("standardise", StandardScaler(with_mean=standardise, with_std=standardise)),
        ("logreg", LogisticRegression(C=C, max_iter=max_iter, random_state=seed)),
    ])


def check_probe_inputs(X: np.ndarray, y: np.ndarray) -> None:
    """Fail with a message naming the problem before any fitting starts."""
    if X.ndim != 2 or len(X) != len(y):
        raise DataError(f"probe inputs must be X [N, H] and y [N]; got {X.shape} and {y.shape}.")
    if not np.isfinite(X).all():
        raise DataError("activations contain NaN or inf; the extraction is broken (check the model's dtype).")
    if len(labels := np.unique(y)) < 2:
        raise DataError(f"only one label ({labels.tolist()}) present; a probe needs at least two classes.")


def proba_sklearn(X: np.ndarray, y: np.ndarray, folds: Folds, C: float = 1.0, max_iter: int = 1000,
                  seed: int = 0, fold_labels: np.ndarray | None = None, standardise: bool = True) -> np.ndarray:
    """Out-of-fold class probabilities [N, K] of the sklearn Pipeline, one fit per fold; columns
    follow np.unique(y), rows in no test fold are NaN. fold_labels [F, N]: the labels fold f
    trains on (default y for every fold)."""
    classes = np.unique(y)
    proba = np.full((len(y), len(classes)), np.nan)
    unconverged = 0
    for fold, (train, test) in enumerate(folds):
        probe = make_logistic_probe(C, max_iter, seed, standardise)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            probe.fit(X[train], (y if fold_labels is None else fold_labels[fold])[train])
        unconverged += any(issubclass(w.category, ConvergenceWarning) for w in caught)
        proba[test] = 0.0  # a class absent from the training rows gets probability 0
        proba[np.ix_(test, np.searchsorted(classes, probe.classes_))] = probe.predict_proba(X[test])
    if unconverged:
        log.warning("%d of %d folds stopped at max_iter=%d before converging; raise probe.max_iter "
                    "or lower probe.C", unconverged, len(folds), max_iter)
    return proba


def fit_predict_sklearn(X: np.ndarray, y: np.ndarray, folds: Folds, C: float = 1.0,
                        max_iter: int = 1000, seed: int = 0) -> np.ndarray:
    """Out-of-fold predicted labels of the sklearn Pipeline."""
    return _most_probable(np.unique(y), proba_sklearn(X, y, folds, C, max_iter, seed))


def _most_probable(classes: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """The label of highest probability per row of proba [..., N, K] (classes[0] for NaN rows)."""
    return classes[np.nan_to_num(proba, nan=-1.0).argmax(-1)]


def probabilities(kind: str, settings: dict, X: np.ndarray, labels: np.ndarray, folds: Folds, seed: int = 0,
                  groups: np.ndarray | None = None, fold_labels: np.ndarray | None = None) -> np.ndarray:
    """Out-of-fold class probabilities [N, K] of probe `kind` with `settings` (its registry.KINDS keys)
    on X [N, H]; columns follow np.unique(labels), rows in no test fold are NaN."""
    from .mlp import proba_mlp_sklearn, proba_mlp_torch

    settings = settings_for(kind, settings)
    if settings["backend"] not in ("torch", "sklearn"):
        raise ValueError(f"probe backend {settings['backend']!r} is not torch or sklearn")
    torch = settings["backend"] == "torch"
    if kind == "logreg":
        if torch:
            return proba_torch(X, labels, folds, settings["C"], settings["max_iter"], fold_labels=fold_labels,
                               standardise=settings["standardise"])[0]
        return proba_sklearn(X, labels, folds, settings["C"], settings["max_iter"], seed, fold_labels,
                             settings["standardise"])
    options = {key: settings[key] for key in KINDS["mlp"] if key != "backend"}
    if torch:
        return proba_mlp_torch(X, labels, folds, seed=seed, groups=groups, fold_labels=fold_labels, **options)[0]
    return proba_mlp_sklearn(X, labels, folds, seed=seed, fold_labels=fold_labels, **options)


def cross_validate_probe(X: np.ndarray, y: np.ndarray, cv_folds: int = 5, seed: int = 0,
                         groups: np.ndarray | None = None, folds: Folds | None = None,
                         shuffled: bool = False, control: np.ndarray | None = None, name: str = "logreg",
                         kind: str = "logreg", majority: bool = True, **settings) -> CrossValidation:
    """Held-out scores and predictions of one probe (`kind` from emoprobe.registry with `settings`
    over its defaults, e.g. backend="sklearn", C=0.5; `name` its probe value) and, with
    `majority`, of the train-fold majority class. With `shuffled` also the shuffled-label control
    (<name>_shuffled: the same probe fitted on folds.shuffled_within_training's labels, scored on
    the true test labels); with `control` (control-task labels [N], see emoprobe.controls) the
    same probe fitted and scored on those (<name>_control) and <name>_selectivity: its accuracy
    minus the control's, per fold and pooled, with a paired bootstrap CI over the rows.

    Scores: per fold (probe, fold, metric, value), each row with the metric on the pooled
    out-of-fold predictions and its seeded bootstrap CI (pooled, ci_low, ci_high; see
    emoprobe.bootstrap). Predictions: per held-out row (row, fold, probe, predicted, p_true),
    p_true the probability given to the row's true label (the control's: its control label; the
    majority baseline's: the label's share of the training rows). `folds` defaults to
    assign_folds' stratified k-fold, rows with equal `groups` (the texts; by default every row
    its own) in one fold; pass (train, test) pairs for an official split.
    """
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y)
    check_probe_inputs(X, y)
    if folds is None:
        folds = assign_folds(np.arange(len(y)) if groups is None else groups, cv_folds, seed, labels=y)

    def fitted(labels, fold_labels=None):
        return probabilities(kind, settings, X, labels, folds, seed, groups, fold_labels)

    fits = {name: (y, fitted(y))}  # probe -> (its true labels, probabilities)
    if majority:  # the training rows' label shares
        classes = np.unique(y)
        prior = np.full((len(y), len(classes)), np.nan)
        for train, test in folds:
            prior[test] = (y[train][:, None] == classes).mean(0)
        fits["majority"] = (y, prior)
    if shuffled:
        fits[control_name(name, "shuffled")] = (y, fitted(y, shuffled_within_training(y, folds, seed)))
    if control is not None:
        control = np.asarray(control)
        check_probe_inputs(X, control)
        fits[control_name(name, "control")] = (control, fitted(control))
    scores, predictions = [], []
    for probe, (truth, proba) in fits.items():
        truth_classes = np.unique(truth)
        predicted = _most_probable(truth_classes, proba)
        p_true = proba[np.arange(len(y)), np.searchsorted(truth_classes, truth)]
        scores.append(fold_scores(truth, predicted, folds, probe))
        predictions.append(held_out(folds, probe, predicted=predicted, p_true=p_true))
    predictions = pl.concat(predictions).sort("probe", "row")
    scores = with_intervals(pl.concat(scores), predictions, lambda group: fits[group["probe"]][0][group["row"]], seed)
    if control is not None:
        scores = pl.concat([scores, _selectivity(scores, predictions, y, control, name, seed)])
    return CrossValidation(scores, predictions)


def _selectivity(scores: pl.DataFrame, predictions: pl.DataFrame, y: np.ndarray, control: np.ndarray, name: str,
                 seed: int) -> pl.DataFrame:
    """Probe <name>_selectivity, metric accuracy: the probe's minus its control's accuracy per
    fold; pooled, the difference of the pooled accuracies with its paired bootstrap CI (both
    scored on each resample's rows, each against its own labels)."""
    accuracy = scores.filter(metric="accuracy")
    controlled = control_name(name, "control")
    per_fold = (accuracy.filter(probe=name).select("fold", "value")
                .join(accuracy.filter(probe=controlled).select("fold", pl.col("value").alias("control")), on="fold"))
    right = {probe: (rows["predicted"].to_numpy() == truth[rows["row"].to_numpy()]).astype(int)
             for probe, truth in ((name, y), (controlled, control))
             for rows in [predictions.filter(probe=probe)]}
    pooled, low, high = bootstrap.paired_difference_ci(np.ones_like(right[name]), right[name], right[controlled],
                                                       "accuracy", seed=seed)
    return per_fold.select(pl.lit(control_name(name, "selectivity")).alias("probe"), "fold",
                           pl.lit("accuracy").alias("metric"), (pl.col("value") - pl.col("control")).alias("value"),
                           pl.lit(pooled).alias("pooled"), pl.lit(low).alias("ci_low"), pl.lit(high).alias("ci_high"))


def fit_directions(X: np.ndarray, y: np.ndarray, C: float = 1.0, max_iter: int = 1000, backend: str = "torch",
                   seed: int = 0, standardise: bool = True) -> dict[str, np.ndarray]:
    """The logistic probe fitted once on all rows at each position of X [P, N, H] (or [N, H]),
    in the model's own units: the logits are x @ weight.T + bias for a raw activation x, with
    weight = coef / scale (the standardiser folded in) and bias = intercept - mean @ weight.T.

    Returns float64 arrays (float32 loses ~1e-4 of a logit to cancellation where activations sit
    far from 0) weight [P, K', H], bias [P, K'], and the standardiser's mean [P, H]
    and scale [P, H] (1 for features constant over the rows, whose weight is 0); K' = 1 for two
    classes (the logit of the second class, the first's fixed at 0), else one row per class,
    in np.unique(y) order. With standardise=False, mean is 0 and scale 1.
    """
    X = _by_position(X)
    all_rows = [(np.arange(X.shape[1]), np.array([], dtype=np.int64))]
    if backend == "torch":
        probes = fit_torch(X, y, all_rows, C, max_iter, standardise=standardise)
        coef, intercept, mean = probes.coef[:, 0], probes.intercept[:, 0], probes.mean[:, 0]
        inv_scale = probes.inv_scale[:, 0]
    else:
        fits = []
        for position in X:
            probe = make_logistic_probe(C, max_iter, seed, standardise).fit(position, y)
            scaler, model = probe.named_steps["standardise"], probe.named_steps["logreg"]
            mean, scale = ((scaler.mean_, scaler.scale_) if standardise
                           else (np.zeros(position.shape[1]), np.ones(position.shape[1])))
            fits.append((model.coef_, model.intercept_, mean, 1.0 / scale))
        coef, intercept, mean, inv_scale = (np.stack(parts) for parts in zip(*fits))
    coef, intercept, mean, inv_scale = (np.asarray(a, dtype=np.float64) for a in (coef, intercept, mean, inv_scale))
    weight = coef * inv_scale[:, None, :]
    bias = intercept - np.einsum("ph,pkh->pk", mean, weight)
    scale = np.where(inv_scale == 0, 1.0, 1.0 / np.where(inv_scale == 0, 1.0, inv_scale))
    return {name: np.ascontiguousarray(value, dtype=np.float64)
            for name, value in (("weight", weight), ("bias", bias), ("mean", mean), ("scale", scale))}


def majority_rate(y: np.ndarray, folds: Folds) -> float:
    """Pooled accuracy of predicting each fold's training majority class (ties: the smallest
    label, as the majority probe) on its test rows."""
    y = np.asarray(y)
    right = 0
    for train, test in folds:
        values, counts = np.unique(y[train], return_counts=True)
        right += int((y[test] == values[counts.argmax()]).sum())
    return right / sum(len(test) for _, test in folds)


def leakage(scores: pl.DataFrame, majority: float, name: str = "logreg", level: float = 0.95) -> str | None:
    """A warning when probe `name`'s shuffled-label control's accuracy lies clearly above the
    majority-class accuracy: no predictor independent of the labels beats that rate in
    expectation, so the probe would be seeing the test labels some other way. None otherwise
    (and without the control, or with a single test fold).

    "Clearly": the mean over folds exceeds the majority rate by more than Student's t (at
    `level`, two-sided) times its standard error over folds. Each fold's control is fitted on
    its own permutation, so the spread over folds carries the permutation's randomness, which
    the row bootstrap of the pooled score does not: a probe fitted on random labels maps whole
    regions of the activation space to one class, and by luck a region can match its true class.
    `majority`: majority_rate of the job's labels and folds.
    """
    from scipy.stats import t

    accuracy = scores.filter(pl.col("metric") == "accuracy")
    control = accuracy.filter(probe=control_name(name, "shuffled"))["value"].to_numpy()
    if len(control) < 2:
        return None
    margin = t.ppf((1 + level) / 2, len(control) - 1) * control.std(ddof=1) / np.sqrt(len(control))
    if control.mean() - majority <= margin:
        return None
    return (f"LEAKAGE? the shuffled-label control scores {control.mean():.3f} over {len(control)} folds (std "
            f"{control.std(ddof=1):.3f}), above the majority-class accuracy {majority:.3f} by more than "
            f"{margin:.3f} ({level:.0%} t margin): something other than the activations carries the test labels "
            "(rows shared across folds, labels reaching the fit); check the folds and the prepared table before "
            "trusting this layer's scores.")


def batched_lbfgs(value_and_grad, theta: "torch.Tensor", max_iter: int, tolerance: float,
                  history: int = 10, gradient_size=None, patience: int = 10) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Minimise G independent smooth problems at once: theta [G, D] -> (theta*, n_iter [G]).

    L-BFGS with a per-problem two-loop recursion, per-problem backtracking (Armijo, or the
    approximate Wolfe condition once f stalls at float32 precision) and a
    per-problem stop once gradient_size(grad) < tolerance (default max |gradient|, as scipy's
    pgtol in sklearn), so one slow problem never slows the others' steps. A problem also stops
    after `patience` steps in a row whose line search had to shrink the step below 2^-10: its
    directions have stopped helping at float32 precision (the analogue of the relative-decrease
    stop, ftol, of scipy's L-BFGS-B, which ends sklearn's fits there too).
    value_and_grad(theta) -> (f [G], grad [G, D]).
    """
    import torch

    gradient_size = gradient_size or (lambda g: g.abs().amax(1))

    n_problems = theta.shape[0]
    S = torch.zeros((history, *theta.shape), dtype=theta.dtype, device=theta.device)
    Y = torch.zeros_like(S)
    rho = torch.zeros((history, n_problems), dtype=theta.dtype, device=theta.device)
    f, g = value_and_grad(theta)
    active = gradient_size(g) > tolerance
    n_iter = torch.zeros(n_problems, dtype=torch.long, device=theta.device)
    stalled = torch.zeros_like(n_iter)
    gamma = 1.0 / g.norm(dim=1).clamp_min(1.0)
    for it in range(max_iter):
        if not bool(active.any()):
            break
        q, alphas, stored = g.clone(), [], min(it, history)
        for j in reversed(range(stored)):  # newest pair first
            slot = (it - stored + j) % history
            alpha = rho[slot] * (S[slot] * q).sum(1)
            q -= alpha[:, None] * Y[slot]
            alphas.append((slot, alpha))
        q *= gamma[:, None]
        for slot, alpha in reversed(alphas):
            beta = rho[slot] * (Y[slot] * q).sum(1)
            q += (alpha - beta)[:, None] * S[slot]
        direction = torch.where(active[:, None], -q, torch.zeros_like(q))
        slope = (g * direction).sum(1)
        uphill = slope >= 0  # not a descent direction: fall back to steepest descent
        direction[uphill] = -g[uphill] * gamma[uphill, None]
        slope = (g * direction).sum(1)
        step = torch.ones_like(f)
        for _ in range(30):
            f_new, g_new = value_and_grad(theta + step[:, None] * direction)
            armijo = f_new <= f + 1e-4 * step * slope
            # Near the optimum the decrease drops below float32 rounding of f; accept a step
            # that keeps f within that noise if the slope along the line says it did not
            # overshoot (Hager and Zhang's approximate Wolfe condition, delta = 0.1).
            approximate_wolfe = (f_new <= f + 1e-6 * f.abs()) & ((g_new * direction).sum(1) <= -0.8 * slope)
            accepted = armijo | approximate_wolfe | ~active
            if bool(accepted.all()):
                break
            step = torch.where(accepted, step, step * 0.5)
        else:  # no acceptable step: stop those problems where they are (as scipy's L-BFGS-B does)
            log.warning("%d problems stopped: the line search found no decrease", int((~accepted).sum()))
            active = active & accepted
        s_new = step[:, None] * direction
        y_new = g_new - g
        sy = (s_new * y_new).sum(1)
        keep = active & (sy > 1e-10)
        slot = it % history
        S[slot] = torch.where(keep[:, None], s_new, torch.zeros_like(s_new))
        Y[slot] = torch.where(keep[:, None], y_new, torch.zeros_like(y_new))
        rho[slot] = torch.where(keep, 1.0 / sy.clamp_min(1e-10), torch.zeros_like(sy))
        gamma = torch.where(keep, sy / (y_new * y_new).sum(1).clamp_min(1e-20), gamma)
        theta = theta + torch.where(active[:, None], s_new, torch.zeros_like(s_new))
        size_new = gradient_size(g_new)
        stalled = torch.where(step < 2.0 ** -10, stalled + 1, 0)
        f = torch.where(active, f_new, f)
        g = torch.where(active[:, None], g_new, g)
        n_iter += active.long()
        converged = size_new <= tolerance
        if bool((stuck := active & ~converged & (stalled >= patience)).any()):
            log.warning("%d problems stopped at max |gradient| %s: %d steps in a row below 2^-10 (float32 precision)",
                        int(stuck.sum()), [round(float(v), 6) for v in size_new[stuck]], patience)
        active = active & ~converged & ~stuck
    return theta, n_iter


@dataclass
class TorchProbes:
    """fit_torch's probes, one per (position, fold), as sklearn's LogisticRegression step of
    the Pipeline holds them: weights on inputs standardised with the fold's training rows."""

    classes: np.ndarray    # [K]
    coef: np.ndarray       # [P, F, K', H]; K' = 1 for two classes (the logit of classes[1]), else K
    intercept: np.ndarray  # [P, F, K']
    mean: np.ndarray       # [P, F, H]: the training rows' means ...
    inv_scale: np.ndarray  # [P, F, H]: ... and 1 / std, 0 for features constant over them


def fit_torch(X: np.ndarray, y: np.ndarray, folds: Folds, C: float = 1.0, max_iter: int = 1000,
              device: str | None = None, tolerance: float = 1e-4, precondition: bool = True,
              fold_labels: np.ndarray | None = None, standardise: bool = True) -> TorchProbes:
    """Fit every (position, fold) problem at once in torch; X is [P, N, H] (or [N, H]).
    fold_labels [F, N]: the labels fold f trains on (default y for every fold; the classes are
    np.unique(y) either way).

    Each problem minimises sklearn's LogisticRegression(C) objective on inputs standardised
    with its training rows (with standardise=False on the raw inputs: mean 0, inv_scale 1):
    mean cross-entropy + ||W||^2 / (2 C n_train), intercept
    unpenalised; for K = 2 classes one weight column (class 0's logit fixed at 0, sklearn's
    binary objective), for K >= 3 one per class (multinomial). It stops as sklearn does, once
    max |dObjective/d(W, b)| < tolerance. Standardisation is folded into the weights, so each
    position's folds share one matrix product with the raw X.

    With `precondition`, L-BFGS works on V with W = M V, M = (R / K + lambda I)^(-1/2) from
    the correlation R of the position's features: the same objective and optimum, but M
    roughly undoes the Hessian's data term, so the strongly correlated hidden states of a
    language model need far fewer steps.
    """
    import torch

    device = _device(device)
    X = _by_position(X)
    classes, y_index = np.unique(y, return_inverse=True)
    (n_positions, n, h), n_folds = X.shape, len(folds)
    k = 1 if len(classes) == 2 else len(classes)                                      # weight columns
    X_t = torch.as_tensor(X, device=device)                                           # [P, N, H]
    train = torch.zeros((n_folds, n), dtype=torch.float64, device=device)
    for f, (rows, _) in enumerate(folds):
        train[f, torch.as_tensor(rows, device=device)] = 1.0
    n_train = train.sum(1)                                                            # [F]
    X64 = X_t.double()
    centre = X64.mean(1, keepdim=True)                                                # [P, 1, H]
    centred = X64 - centre  # fold moments of centred values: no cancellation in var
    del X64
    mean = torch.einsum("fn,pnh->pfh", train, centred) / n_train[None, :, None]      # [P, F, H]
    var = torch.einsum("fn,pnh->pfh", train, centred * centred) / n_train[None, :, None] - mean ** 2
    mean = mean + centre
    # A feature constant over the training rows (up to rounding, sklearn's test) is 0 once
    # standardised, so it gets no weight at all (e.g. every prompt ending in the same token).
    inv_scale = torch.where(_constant(var, mean, n_train[None, :, None]), 0.0, var.rsqrt()).float()
    mean = mean.float()
    if not standardise:
        mean, inv_scale = torch.zeros_like(mean), torch.ones_like(inv_scale)
    weight = (train / n_train[:, None]).float()                                       # [F, N]
    penalty = (1.0 / (2 * C * n_train)).float()                                       # [F]
    fold_index = np.broadcast_to(y_index, (n_folds, n)) if fold_labels is None else np.searchsorted(classes, fold_labels)
    onehot = torch.nn.functional.one_hot(torch.as_tensor(np.array(fold_index.T), device=device), len(classes)).float()  # [N, F, K]
    M, M_inv = (_preconditioner(centred, centre, len(classes), 2 * float(penalty.mean()), standardise)
                if precondition else (None, None))                                                    # [P, H, H]
    del centred

    def split(theta):
        theta = theta.reshape(n_positions, n_folds, -1)
        V = theta[..., : h * k].reshape(n_positions, n_folds, h, k)
        b = theta[..., h * k:]
        return (V if M is None else torch.einsum("phj,pfjk->pfhk", M, V)), b

    # Each block of rows trained on by the same folds (k-fold: the rows of one test fold, in the
    # other k - 1 folds' training sets) gets logits under those folds' probes only: no work on
    # rows a fold holds out (a fifth fewer multiply-adds at k = 5).
    blocks = [(X_t[:, rows].contiguous(), fold_ids, onehot[rows][:, fold_ids], weight[fold_ids][:, rows].T[..., None])
              for rows, fold_ids in _training_blocks(train.cpu().numpy() > 0, device)]

    def value_and_grad(theta):
        """The objectives [P * F] and their gradients, by hand (autograd's bookkeeping cost a
        third of each evaluation): logits = x W_raw + b_raw, W_raw = W * inv_scale, b_raw = b - mean W_raw."""
        W, b = split(theta)
        W_raw, b_raw = _raw_weights(W, b, mean, inv_scale)
        loss = penalty * (W * W).sum((2, 3))                                         # [P, F]
        grad_W, grad_b = torch.zeros_like(W), torch.zeros_like(b)
        for X_block, fold_ids, onehot_block, weight_block in blocks:
            logits = _raw_logits(X_block, W_raw[:, fold_ids], b_raw[:, fold_ids])    # [P, n, f, K]
            log_norm = torch.logsumexp(logits, -1, keepdim=True)
            nll = log_norm[..., 0] - (logits * onehot_block).sum(-1)                 # [P, n, f]
            loss.index_add_(1, fold_ids, (nll * weight_block[..., 0]).sum(1))
            d_logits = (torch.exp(logits - log_norm) - onehot_block) * weight_block
            if k == 1:
                d_logits = d_logits[..., 1:]  # class 0's logit is fixed at 0
            rows, folds_in_block = d_logits.shape[1:3]
            grad_b.index_add_(1, fold_ids, d_logits.sum(1))
            grad = torch.bmm(X_block.transpose(1, 2), d_logits.reshape(n_positions, rows, folds_in_block * k))
            grad_W.index_add_(1, fold_ids, grad.reshape(n_positions, h, folds_in_block, k).transpose(1, 2))
        grad_W = (grad_W - mean[..., None] * grad_b[:, :, None, :]) * inv_scale[..., None] + 2 * penalty[:, None, None] * W
        if M is not None:  # M is symmetric
            grad_W = torch.einsum("phj,pfhk->pfjk", M, grad_W)
        return loss.reshape(-1), torch.cat([grad_W.reshape(n_positions, n_folds, h * k), grad_b], -1).reshape(theta.shape)

    def gradient_size(grad):
        """max |dObjective/d(W, b)|, the criterion sklearn stops on, whatever the parametrisation."""
        grad = grad.reshape(n_positions, n_folds, -1)
        grad_W = grad[..., : h * k].reshape(n_positions, n_folds, h, k)
        if M_inv is not None:
            grad_W = torch.einsum("phj,pfjk->pfhk", M_inv, grad_W)
        return torch.maximum(grad_W.abs().amax((2, 3)), grad[..., h * k:].abs().amax(2)).reshape(-1)

    theta0 = torch.zeros((n_positions * n_folds, h * k + k), device=device)
    theta, n_iter = batched_lbfgs(value_and_grad, theta0, max_iter, tolerance, gradient_size=gradient_size)
    log.info("L-BFGS steps per (position, fold) problem: median %d, max %d", int(n_iter.median()), int(n_iter.max()))
    if bool((n_iter >= max_iter).any()):
        log.warning("%d of %d (position, fold) problems stopped at max_iter=%d before converging",
                    int((n_iter >= max_iter).sum()), len(n_iter), max_iter)
    with torch.no_grad():
        W, b = split(theta)
    return TorchProbes(classes, W.transpose(2, 3).cpu().numpy(), b.cpu().numpy(), mean.cpu().numpy(),
                       inv_scale.cpu().numpy())


def proba_torch(X: np.ndarray, y: np.ndarray, folds: Folds, C: float = 1.0, max_iter: int = 1000,
                device: str | None = None, tolerance: float = 1e-4, precondition: bool = True,
                fold_labels: np.ndarray | None = None, standardise: bool = True) -> np.ndarray:
    """Out-of-fold class probabilities [P, N, K] of fit_torch's probes for X [P, N, H] (or
    [N, H]); columns follow np.unique(y), rows in no test fold are NaN."""
    import torch

    device = _device(device)
    probes = fit_torch(X, y, folds, C, max_iter, device, tolerance, precondition, fold_labels, standardise)
    X = _by_position(X)
    with torch.no_grad():
        W, b, mean, inv_scale = (torch.as_tensor(a, device=device) for a in
                                 (probes.coef.swapaxes(2, 3), probes.intercept, probes.mean, probes.inv_scale))
        proba = torch.softmax(_raw_logits(torch.as_tensor(X, device=device), *_raw_weights(W, b, mean, inv_scale)).double(), -1)
        proba = proba.cpu().numpy()                                                   # [P, N, F, K]
    out = np.full((X.shape[0], X.shape[1], len(probes.classes)), np.nan)
    for f, (_, test) in enumerate(folds):
        out[:, test] = proba[:, test, f]
    return out


def fit_predict_torch(X: np.ndarray, y: np.ndarray, folds: Folds, C: float = 1.0, max_iter: int = 1000,
                      device: str | None = None, tolerance: float = 1e-4, precondition: bool = True) -> np.ndarray:
    """Out-of-fold predicted labels [P, N] of fit_torch's probes for X [P, N, H] (or [N, H])."""
    return _most_probable(np.unique(y), proba_torch(X, y, folds, C, max_iter, device, tolerance, precondition))


def _device(device: str | None) -> str:
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def _by_position(X: np.ndarray) -> np.ndarray:
    """X as float32 [P, N, H] (one position for X [N, H])."""
    X = np.asarray(X, dtype=np.float32)
    return X[None] if X.ndim == 2 else X


def _training_blocks(train: np.ndarray, device) -> list[tuple["torch.Tensor", "torch.Tensor"]]:
    """The rows grouped by the folds that train on them: (rows, fold ids) per distinct column
    of train [F, N] (bool); rows no fold trains on are left out."""
    import torch

    patterns, block_of = np.unique(train.T, axis=0, return_inverse=True)
    return [(torch.as_tensor(np.flatnonzero(block_of.ravel() == block), device=device),
             torch.as_tensor(np.flatnonzero(pattern), device=device))
            for block, pattern in enumerate(patterns) if pattern.any()]


def _raw_weights(W: "torch.Tensor", b: "torch.Tensor", mean: "torch.Tensor",
                 inv_scale: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
    """W [P, F, H, K'] and b [P, F, K'] of probes on standardised inputs as weights on raw
    inputs: z W + b = x W_raw + b_raw."""
    import torch

    W_raw = W * inv_scale[..., None]
    return W_raw, b - torch.einsum("pfh,pfhk->pfk", mean, W_raw)


def _raw_logits(X: "torch.Tensor", W_raw: "torch.Tensor", b_raw: "torch.Tensor") -> "torch.Tensor":
    """Class logits [P, N, F, K] of every row of X [P, N, H] under every (position, fold) probe
    W_raw [P, F, H, K'], b_raw [P, F, K'] on raw inputs; K' = 1 prepends class 0's logit, 0."""
    import torch

    (n_positions, n, h), n_folds, k = X.shape, W_raw.shape[1], W_raw.shape[3]
    W_cat = W_raw.permute(0, 2, 1, 3).reshape(n_positions, h, n_folds * k)
    logits = torch.bmm(X, W_cat).reshape(n_positions, n, n_folds, k) + b_raw[:, None]
    return torch.cat([torch.zeros_like(logits), logits], -1) if k == 1 else logits


def _constant(var, mean, n):
    """Features whose variance is rounding noise (sklearn's StandardScaler test)."""
    import torch

    return var <= n * torch.finfo(torch.float64).eps * var + (n * mean * torch.finfo(torch.float64).eps) ** 2


def _preconditioner(centred: "torch.Tensor", centre: "torch.Tensor", n_classes: int, ridge: float,
                    standardise: bool = True):
    """(M, M^-1) per position, M = (R / K + ridge I)^(-1/2), R the correlation of the features
    (`centred` [P, N, H] float64, less their means `centre`) over all rows, or their covariance
    for a probe on raw inputs (labels unused: it only steers the optimiser)."""
    import torch

    var = centred.square().mean(1, keepdim=True)
    inv_std = torch.where(_constant(var, centre, centred.shape[1]), 0.0, var.rsqrt())
    if not standardise:
        inv_std = torch.ones_like(inv_std)
    standardised = (centred * inv_std).float()
    correlation = (standardised.transpose(1, 2) @ standardised).double() / centred.shape[1]  # [P, H, H]
    eigenvalues, U = torch.linalg.eigh(correlation)
    scale = (eigenvalues.clamp_min(0) / n_classes + ridge).rsqrt()
    M = (U * scale[:, None, :]) @ U.transpose(1, 2)
    M_inv = (U / scale[:, None, :]) @ U.transpose(1, 2)
    return M.float(), M_inv.float()
