"""End-to-end run with the heavier controls: a tiny model and its random-init twin, two probes
(logistic and MLP), the control task and selectivity, beside the lexical baseline and the
shuffled-label control; and the shipped config/rigour.yaml planned on the real SmolLM2."""

from __future__ import annotations

import json
import shutil
import subprocess

import polars as pl
import pytest
from safetensors import safe_open

from .conftest import REPO, SHARED_DATA, SNAKEMAKE, crowd_envent_path, job_counts, make_tiny_model, read_metrics, run_snakemake, require_smollm2

LAYERS = 4  # embeddings + 3 blocks


@pytest.fixture(scope="module")
def rigour_run(tmp_path_factory):
    crowd_envent_path()
    root = tmp_path_factory.mktemp("rigour")
    model = str(make_tiny_model(root / "tiny", "llama"))
    config = {
        "data_dir": str(SHARED_DATA),
        "positions": [-1],
        "probe": {"cv_folds": 3, "control_task": "first_word", "save_directions": True},
        "probes": [{"name": "logreg", "kind": "logreg"}, {"name": "mlp", "kind": "mlp", "hidden": 16, "max_epochs": 3}],
        "models": {"tiny": {"source": "local", "path": model},
                   "tiny-random": {"source": "local", "path": model, "random_init": True, "init_seed": 3}},
        "datasets": {"crowd_envent": {"type": "crowd_envent", "max_per_class": 6}},
    }
    workdir = root / "run"
    dry = run_snakemake(workdir, config, "-n")
    result = run_snakemake(workdir, config)
    assert result.returncode == 0, result.stderr[-4000:]
    return {"workdir": workdir, "dry": dry}


def test_jobs_per_rule(rigour_run):
    assert job_counts(rigour_run["dry"].stdout + rigour_run["dry"].stderr) == {
        "prepare_dataset": 1, "extract_activations": 2, "collect_answers": 2, "score_answers": 2,
        "fit_probe": 2 * 2 * LAYERS, "lexical_baseline": 1,
        "save_directions": 2 * LAYERS,  # the linear probe only
        "compare_with_lexical": 2, "aggregate_metrics": 1, "build_report": 1, "write_provenance": 1, "all": 1}


def test_twin_shards_record_their_weights_and_differ(rigour_run):
    activations = rigour_run["workdir"] / "results" / "activations"
    readings = {}
    for model in ("tiny", "tiny-random"):
        (part,) = (activations / model / "crowd_envent").iterdir()
        with safe_open(str(part / "layer_2.safetensors"), framework="numpy") as handle:
            readings[model] = (handle.metadata()["weights"], handle.get_tensor("activations"))
    assert readings["tiny"][0] == "pretrained" and readings["tiny-random"][0] == "random_init(seed=3)"
    assert readings["tiny"][1].shape == readings["tiny-random"][1].shape
    assert abs(readings["tiny"][1] - readings["tiny-random"][1]).max() > 1e-3


def test_metrics_hold_control_selectivity_and_both_models(rigour_run):
    metrics = read_metrics(rigour_run["workdir"])
    probed = metrics.filter(pl.col("model").is_not_null() & (pl.col("probe") != "answer"))
    assert set(probed["model"]) == {"tiny", "tiny-random"}
    assert set(metrics.filter(probe="answer")["model"]) == {"tiny", "tiny-random"}  # both answer
    assert set(probed["probe"]) == {"majority"} | {f"{probe}{control}" for probe in ("logreg", "mlp")
                                                   for control in ("", "_shuffled", "_control", "_selectivity")}
    accuracy = probed.filter(metric="accuracy")
    for (model, layer), rows in accuracy.group_by("model", "layer"):
        pooled = dict(rows.select("probe", "pooled").iter_rows())
        for probe in ("logreg", "mlp"):
            assert pooled[f"{probe}_selectivity"] == pytest.approx(pooled[probe] - pooled[f"{probe}_control"])
    assert set(probed.filter(probe="logreg_selectivity")["metric"]) == {"accuracy"}  # selectivity is of accuracy only
    vs = pl.read_parquet(rigour_run["workdir"] / "results" / "metrics" / "vs_lexical.parquet")
    assert set(vs["probe"]) == {"logreg", "mlp"} and vs.height == 2 * 2 * LAYERS


def test_saved_directions_give_the_probe_s_logits_from_raw_activations(rigour_run):
    """The saved logreg direction at a layer, applied to the shard's raw activations, gives the
    logits of sklearn's Pipeline fitted on all rows (the torch backend's optimum, so to its
    tolerance), and says what it is."""
    import numpy as np
    from safetensors.numpy import load_file

    from emoprobe.probes import make_logistic_probe

    results = rigour_run["workdir"] / "results"
    (path,) = (results / "probes" / "tiny" / "crowd_envent" / "layer_2").glob("*.logreg.directions.safetensors")
    assert not list(results.glob("probes/*/*/layer_*/*.mlp.directions.safetensors"))
    with safe_open(str(path), framework="numpy") as handle:
        meta = handle.metadata()
    assert meta["probe"] == "logreg" and meta["layer"] == "2" and json.loads(meta["positions"]) == [-1]
    assert len(json.loads(meta["labels"])) == 13 and json.loads(meta["label_ids"]) == list(range(13))
    saved = load_file(str(path))
    assert saved["weight"].shape == (1, 13, 32) and saved["bias"].shape == (1, 13)
    (part,) = (results / "activations" / "tiny" / "crowd_envent").iterdir()
    X = load_file(str(part / "layer_2.safetensors"))["activations"][:, 0]
    y = pl.read_parquet(results / "data" / "crowd_envent.parquet")["label_id"].to_numpy()
    expected = make_logistic_probe().fit(X, y).decision_function(X)
    logits = X @ saved["weight"][0].T + saved["bias"][0]
    # Multinomial logits are defined up to a constant per row: compare them centred.
    centred = [a - a.mean(1, keepdims=True) for a in (logits, expected)]
    # 78 rows of 32 features: near-separable, logits up to ~10, where the stop at |gradient| < 1e-4
    # leaves the two optimisers ~0.3% apart; the exact reproduction is pinned in test_probes.
    np.testing.assert_allclose(*centred, atol=1e-2 * np.abs(centred[1]).max())
    assert (logits.argmax(1) == expected.argmax(1)).mean() > 0.95


def test_report_draws_the_twin_and_the_selectivity(rigour_run):
    report = rigour_run["workdir"] / "results" / "report"
    spec = (report / "tiny" / "crowd_envent" / "accuracy_by_layer.html").read_text()
    assert "tiny-random (random init)" in spec and "control task" in spec
    for model in ("tiny", "tiny-random"):
        for chart in ("selectivity_by_layer", "probes_by_layer"):
            png = report / model / "crowd_envent" / f"{chart}.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert '"mlp"' in (report / "tiny" / "crowd_envent" / "probes_by_layer.html").read_text()
    summary = pl.read_csv(report / "summary.csv")
    assert summary["selectivity"].null_count() == 0 and set(summary["model"]) == {"tiny", "tiny-random"}
    assert summary.filter(pl.col("model") == "tiny")["probe"].to_list() == ["logreg", "mlp"]


def test_shipped_rigour_config_plans_the_twin_and_the_control(tmp_path):
    """The README's command, `snakemake --configfile config/rigour.yaml`, dry-run: the config
    extends the default one with SmolLM2's random-init twin and the control task."""
    require_smollm2()
    shutil.copytree(REPO / "config", tmp_path / "config")  # the working directory holds config/, as the repo does
    dry = subprocess.run([SNAKEMAKE, "-n", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "--configfile",
                          "config/rigour.yaml"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert dry.returncode == 0, (dry.stdout + dry.stderr)[-3000:]
    counts = job_counts(dry.stdout + dry.stderr)
    assert counts["extract_activations"] == 2 and counts["fit_probe"] == 2 * 2 * 31  # models x probes x layers
    assert "results/report/smollm2-135m-instruct/crowd_envent/selectivity_by_layer.png" in dry.stdout
    assert "results/activations/smollm2-135m-instruct-random/crowd_envent/" in dry.stdout
    assert "layer_30/positions_-5to-1.mlp.parquet" in dry.stdout
    assert counts["save_directions"] == 2 * 31 and "positions_-5to-1.logreg.directions.safetensors" in dry.stdout
