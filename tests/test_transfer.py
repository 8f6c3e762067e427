"""Cross-dataset transfer: label maps, the transfer scores against sklearn and constructed cases,
and a real workflow run over two datasets."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from emoprobe.data.label_maps import EKMAN, apply_label_map, resolve_label_map
from emoprobe.errors import ConfigError
from emoprobe.transfer import shared_labels, transfer_scores

from .conftest import SHARED_DATA, crowd_envent_path, job_counts, run_snakemake


def _accuracy(rows, kind):
    return next(row["value"] for row in rows if row["kind"] == kind and row["metric"] == "accuracy")


def test_transfer_to_itself_is_the_in_sample_fit():
    """The same rows as source and target: the transfer accuracy is sklearn's in-sample accuracy of
    the same probe (standardised logistic regression, C=1) fitted on them."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 240)
    X = (rng.normal(size=(4, 30))[y] * 0.4 + rng.normal(size=(240, 30))).astype(np.float32)
    rows = transfer_scores(X, y, X, y, np.arange(240), cv_folds=5, seed=0)
    sklearn = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000)).fit(X, y)
    assert _accuracy(rows, "transfer") == pytest.approx(np.mean(sklearn.predict(X) == y), abs=1 / 240)
    assert _accuracy(rows, "transfer") > _accuracy(rows, "in_domain")  # fitting on the test rows is optimistic


def test_shared_directions_transfer_and_independent_ones_do_not():
    rng = np.random.default_rng(1)
    shared_means, other_means = rng.normal(size=(3, 25)), rng.normal(size=(3, 25))

    def sample(means, n):
        y = rng.integers(0, 3, n)
        return (1.5 * means[y] + rng.normal(size=(n, 25))).astype(np.float32), y

    source = sample(shared_means, 400)
    same, independent = sample(shared_means, 300), sample(other_means, 300)
    high = transfer_scores(*source, *same, np.arange(300))
    low = transfer_scores(*source, *independent, np.arange(300))
    assert _accuracy(high, "transfer") > 0.9
    assert abs(_accuracy(low, "transfer") - 1 / 3) < 0.12  # chance
    assert _accuracy(low, "in_domain") > 0.9  # the target's own labels are readable: the mismatch is the direction
    for row in high + low:
        assert row["ci_low"] <= row["value"] <= row["ci_high"]


def test_label_maps():
    crowd = {"type": "crowd_envent", "label_map": "ekman"}
    assert resolve_label_map("c", crowd) is EKMAN["crowd_envent"]
    assert apply_label_map(["joy", "pride", "anger"], EKMAN["crowd_envent"], list(EKMAN["crowd_envent"]), "c") == [
        "joy", None, "anger"]
    assert shared_labels(["joy", None, "anger", "fear"], ["anger", "joy", "shame", None]) == ["anger", "joy"]
    with pytest.raises(ConfigError, match=r"'datasets.c.label_map' names \['happiness'\], which are not labels"):
        resolve_label_map("c", {"type": "crowd_envent", "label_map": {"happiness": "joy"}})
    with pytest.raises(ConfigError, match=r"no ekman map ships for this goemotions dataset"):
        resolve_label_map("g", {"type": "goemotions", "labels": "single_label", "label_map": "ekman"})
    with pytest.raises(ConfigError, match=r"the label map of mine names \['glad'\], which are not among its labels"):
        apply_label_map(["joy", "sad"], {"glad": "joy"}, ["joy", "sad"], "mine")


def test_transfer_needs_two_mapped_datasets(tiny_models, tmp_path):
    config = {"data_dir": str(SHARED_DATA), "transfer": {"enabled": True},
              "models": {"tiny": {"source": "local", "path": str(tiny_models["llama"]["left"])}},
              "datasets": {"crowd_envent": {"type": "crowd_envent", "label_map": "ekman"}}}
    result = run_snakemake(tmp_path, config, "-n")
    assert result.returncode != 0 and "give two or more a `label_map`" in result.stdout + result.stderr


def test_transfer_between_two_datasets_end_to_end(tiny_models, tmp_path):
    """crowd-enVENT and ISEAR through their shipped ekman maps: both directions are measured on the
    five shared labels; a row equals transfer_scores on the shards' rows read here (the job reads the
    right shards, rows and mapped labels), and the report draws the matrix."""
    from safetensors.numpy import load_file

    crowd_envent_path()
    config = {"data_dir": str(SHARED_DATA), "layers": "all", "positions": [-1], "probe": {"cv_folds": 2},
              "transfer": {"enabled": True},
              "models": {"tiny": {"source": "local", "path": str(tiny_models["llama"]["left"])}},
              "datasets": {"crowd_envent": {"type": "crowd_envent", "max_per_class": 6, "label_map": "ekman"},
                           "isear": {"type": "isear", "max_per_class": 6, "label_map": "ekman"}}}
    result = run_snakemake(tmp_path, config)
    assert result.returncode == 0, result.stderr[-3000:]
    assert job_counts(result.stdout + result.stderr)["transfer_probe"] == 2
    table = pl.read_parquet(tmp_path / "results" / "metrics" / "transfer.parquet")
    assert set(table["shared_labels"]) == {"anger, disgust, fear, joy, sadness"}
    assert table.height == 2 * 4 * 2 * 2  # pairs x layers x kinds x metrics
    row = table.filter(source="crowd_envent", target="isear", layer=2, kind="transfer", metric="accuracy")
    prepared = {name: pl.read_parquet(tmp_path / "results" / "data" / f"{name}.parquet") for name in ("crowd_envent", "isear")}
    shared = ["anger", "disgust", "fear", "joy", "sadness"]
    X, y = {}, {}
    for name, frame in prepared.items():
        (part,) = (tmp_path / "results" / "activations" / "tiny" / name).iterdir()
        keep = np.flatnonzero(frame["label"].is_in(shared).to_numpy())
        X[name] = load_file(part / "layer_2.safetensors")["activations"][:, 0][keep]
        y[name] = np.searchsorted(shared, frame["label"].to_numpy()[keep].astype(str))
    expected = transfer_scores(X["crowd_envent"], y["crowd_envent"], X["isear"], y["isear"],
                               prepared["isear"]["text"].to_numpy()[np.isin(prepared["isear"]["label"], shared)],
                               cv_folds=2)
    assert row["value"][0] == pytest.approx(_accuracy(expected, "transfer"))
    assert (tmp_path / "results" / "report" / "tiny" / "transfer_matrix.png").stat().st_size > 5000
    assert "Transfer of the probe across datasets at layer" in (tmp_path / "results" / "report" / "index.html").read_text()
    # a changed label map reruns the transfer, never the preparation (the prepared tables do not depend on it)
    config["datasets"]["isear"]["label_map"] = {"disgust": None, "shame": None, "guilt": None}
    again = job_counts(run_snakemake(tmp_path, config, "-n").stdout)
    assert again["transfer_probe"] == 2 and "prepare_dataset" not in again and "fit_probe" not in again
