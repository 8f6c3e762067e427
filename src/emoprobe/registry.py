"""The probe registry: the classification probe kinds a `probes:` config entry can name, their
settings' defaults, and the names of their controls (probes.probabilities fits a kind).

Every probe job fits one entry (its `name` is its `probe` value in the metrics table) and, on
the same folds, its controls, named "<name>_shuffled", "<name>_control", "<name>_selectivity".
"""

from __future__ import annotations

KINDS = {
    # sklearn's LogisticRegression(C) objective on standardised (or, standardise: false, raw) inputs
    # (probes.fit_torch / the Pipeline)
    "logreg": {"backend": "torch", "C": 1.0, "max_iter": 1000, "standardise": True},
    # one hidden ReLU layer (emoprobe.mlp)
    "mlp": {"backend": "torch", "hidden": 256, "weight_decay": 0.01, "lr": 0.001, "batch_size": 128,
            "max_epochs": 20, "patience": 3, "validation_fraction": 0.1},
}
# Where a backend has defaults of its own: sklearn's MLPClassifier's, with Tak et al.'s 32 units.
BACKEND_DEFAULTS = {("mlp", "sklearn"): {"hidden": 32, "weight_decay": 1e-4, "batch_size": 200, "max_epochs": 200,
                                         "patience": 10}}
LINEAR = ("logreg",)  # kinds whose fit is a direction per class in the activation space
ANSWER = "answer"  # the model's own answer's probe value (answers.py)
RESERVED = ("majority", "ridge", "mean", "lexical", ANSWER)  # probe values the workflow writes itself
CONTROLS = ("shuffled", "control", "selectivity")


def control_name(probe: str, control: str) -> str:
    """The metrics table's `probe` value of one of a probe's controls (CONTROLS)."""
    return f"{probe}_{control}"


def with_defaults(entry: dict) -> dict:
    """A `probes:` entry with its kind's (and backend's) defaults filled in."""
    return {"name": entry["name"], "kind": entry["kind"]} | settings_for(entry["kind"], entry)


def settings_for(kind: str, given: dict) -> dict:
    """A kind's settings: its defaults, its backend's own defaults, then the `given` ones."""
    backend = given.get("backend", KINDS[kind]["backend"])
    return KINDS[kind] | BACKEND_DEFAULTS.get((kind, backend), {}) | given
