"""Incremental reruns and faults: what each change schedules, and runs that survive kill -9."""

from __future__ import annotations

import copy
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import polars as pl
import pytest
import yaml

from .conftest import REPO, SHARED_DATA, SNAKEMAKE, crowd_envent_path, job_counts, make_tiny_model, read_metrics, run_snakemake

pytestmark = pytest.mark.slow


def base_config(model_dir: Path) -> dict:
    return {
        "data_dir": str(SHARED_DATA),
        "layers": [0, 1, 2],
        "positions": [-1],
        "probe": {"cv_folds": 2},
        "models": {"tiny": {"source": "local", "path": str(model_dir)}},
        "datasets": {"crowd_envent": {"type": "crowd_envent", "max_per_class": 60}},
    }


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    crowd_envent_path()
    root = tmp_path_factory.mktemp("reruns")
    config = base_config(make_tiny_model(root / "tiny", "llama"))
    result = run_snakemake(root / "run", config)
    assert result.returncode == 0, result.stderr[-3000:]
    return {"root": root, "workdir": root / "run", "config": config}


def changed(config: dict, path: str, value) -> dict:
    config = copy.deepcopy(config)
    *parents, key = path.split(".")
    node = config
    for parent in parents:
        node = node[parent]
    node[key] = value
    return config


def planned(done, config) -> dict[str, int]:
    dry = run_snakemake(done["workdir"], config, "-n")
    assert dry.returncode == 0, dry.stderr[-3000:]
    return job_counts(dry.stdout + dry.stderr)


TABLES = {"aggregate_metrics": 1, "build_report": 1, "write_provenance": 1, "all": 1}
TAIL = {"compare_with_lexical": 1, **TABLES}  # after refitted probes: their comparison with the lexical baseline
ANSWERED = {"collect_answers": 1, "score_answers": 1}  # the model's answers: copied, then scored


def test_nothing_changed_nothing_runs(done):
    assert planned(done, done["config"]) == {}


def test_adding_a_dataset(done):
    config = changed(done["config"], "datasets.slice2", {"type": "crowd_envent", "max_per_class": 30})
    assert planned(done, config) == {"prepare_dataset": 1, "extract_activations": 1, **ANSWERED,
                                     "fit_probe": 3, "lexical_baseline": 1, **TAIL}


def test_adding_a_layer_extracts_and_probes_only_that_layer(done):
    config = changed(done["config"], "layers", [0, 1, 2, 3])
    dry = run_snakemake(done["workdir"], config, "-n")
    assert job_counts(dry.stdout + dry.stderr) == {"extract_activations": 1, "fit_probe": 1, **TAIL}
    assert "activations/tiny/crowd_envent/layers_3.positions_-1" in dry.stdout
    probes = dry.stdout.split("rule aggregate")[0]
    assert "layer_3/positions_-1.logreg.parquet" in probes and "layer_2/positions_-1.logreg.parquet" not in probes


def test_adding_a_position_extracts_and_probes_only_that_position(done):
    config = changed(done["config"], "positions", [-1, -2])
    dry = run_snakemake(done["workdir"], config, "-n")
    assert job_counts(dry.stdout + dry.stderr) == {"extract_activations": 1, "fit_probe": 3, **TAIL}
    probes = dry.stdout.split("rule aggregate")[0]
    assert "layer_0/positions_-2.logreg.parquet" in probes and "positions_-1.logreg.parquet" not in probes


def test_adding_a_layer_and_a_position_together(done):
    """Layer 3 needs positions -1 and -2, layers 0-2 only -2: two parts; one probe job per
    layer and part, 3 + 1."""
    config = changed(changed(done["config"], "layers", [0, 1, 2, 3]), "positions", [-1, -2])
    assert planned(done, config) == {"extract_activations": 2, "fit_probe": 4, **TAIL}


def test_removing_a_position_only_rebuilds_the_table(done, tmp_path):
    """Positions -2 and -1 are fitted in one job per layer; dropping -2 from the config refits
    nothing and the metrics table keeps -1 only, equal to the run that never had -2."""
    workdir = tmp_path / "run"
    config = changed(done["config"], "positions", [-2, -1])
    result = run_snakemake(workdir, config)
    assert result.returncode == 0, result.stderr[-3000:]
    both = read_metrics(workdir)
    assert sorted(set(both["position"].drop_nulls())) == ["-1", "-2"]
    assert planned({"workdir": workdir}, done["config"]) == TABLES
    result = run_snakemake(workdir, done["config"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_metrics(workdir).equals(both.filter((pl.col("position") == "-1") | pl.col("position").is_null()))


def test_added_layer_then_full_run_reuses_every_part(done, tmp_path):
    """After the new layer's part is extracted, the next run has nothing to do, and a removed
    layer's part is simply not needed."""
    workdir = tmp_path / "run"
    shutil.copytree(done["workdir"], workdir, symlinks=True)
    config = changed(done["config"], "layers", [0, 1, 2, 3])
    result = run_snakemake(workdir, config)
    assert result.returncode == 0, result.stderr[-3000:]
    parts = sorted(path.name for path in (workdir / "results/activations/tiny/crowd_envent").iterdir())
    assert parts == ["layers_0to2.positions_-1", "layers_3.positions_-1"]
    assert planned({"workdir": workdir}, config) == {}
    assert planned({"workdir": workdir}, changed(config, "layers", [1, 3])) == TAIL  # no probe refitted
    metrics = read_metrics(workdir)
    assert sorted(set(metrics["layer"].drop_nulls())) == [0, 1, 2, 3]
    assert metrics.filter((pl.col("layer") < 3) | pl.col("layer").is_null()).equals(read_metrics(done["workdir"]))


def test_adding_sites_extracts_and_probes_only_them(done, tmp_path):
    """Adding attn_out and mlp_out to a finished run: one extraction part for layers 1-2 (the
    sub-block sites start at layer 1), one probe job per (layer, site), the residual probes left
    alone; the table gains their rows (site column), and the report its site charts."""
    config = changed(done["config"], "sites", ["residual", "attn_out", "mlp_out"])
    dry = run_snakemake(done["workdir"], config, "-n")
    assert job_counts(dry.stdout + dry.stderr) == {"extract_activations": 1, "fit_probe": 4, **TAIL}
    assert "activations/tiny/crowd_envent/layers_1to2.sites_attn_out+mlp_out.positions_-1" in dry.stdout
    workdir = tmp_path / "run"
    shutil.copytree(done["workdir"], workdir, symlinks=True)
    result = run_snakemake(workdir, config)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (workdir / "results/probes/tiny/crowd_envent/layer_2.mlp_out/positions_-1.logreg.parquet").is_file()
    metrics = read_metrics(workdir)
    probed = metrics.filter(probe="logreg", metric="accuracy")
    assert sorted(probed.select("layer", "site").unique().iter_rows()) == [
        (0, "residual"), (1, "attn_out"), (1, "mlp_out"), (1, "residual"), (2, "attn_out"), (2, "mlp_out"),
        (2, "residual")]
    assert metrics.filter(probe="lexical")["site"].is_null().all()
    assert metrics.filter(site="residual").equals(read_metrics(done["workdir"]).filter(site="residual"))
    compared = pl.read_parquet(workdir / "results/metrics/vs_lexical.parquet")
    assert compared.filter(probe="logreg").height == 7 and set(compared["site"]) == {"residual", "attn_out", "mlp_out"}
    figures = workdir / "results/report/tiny/crowd_envent"
    assert (figures / "sites_by_layer.png").is_file() and (figures / "site_layer_heatmap.png").is_file()
    depth = (workdir / "results/report/relative_depth.html").read_text()
    assert all(f"crowd_envent (logreg accuracy), {site}" in depth for site in ("residual", "attn_out", "mlp_out"))
    assert planned({"workdir": workdir}, config) == {}


def test_adding_pooled_positions_and_sites_extracts_and_probes_only_them(done, tmp_path):
    """Adding text_last and text_mean, and the sub-block sites, to a finished run: a part for the
    residual stream's pooled positions (layers 0-2) and one for the new sites' three positions
    (layers 1-2); one probe job per (layer, site, part); the -1 residual probes left alone. The
    table gains the pooled rows, the report the site charts at text_mean."""
    config = changed(changed(done["config"], "positions", [-1, "text_mean", "text_last"]),
                     "sites", ["residual", "attn_out", "mlp_out"])
    dry = run_snakemake(done["workdir"], config, "-n")
    assert job_counts(dry.stdout + dry.stderr) == {"extract_activations": 2, "fit_probe": 7, **TAIL}
    assert "activations/tiny/crowd_envent/layers_0to2.positions_text_last+text_mean" in dry.stdout
    assert "activations/tiny/crowd_envent/layers_1to2.sites_attn_out+mlp_out.positions_-1+text_last+text_mean" \
        in dry.stdout
    workdir = tmp_path / "run"
    shutil.copytree(done["workdir"], workdir, symlinks=True)
    result = run_snakemake(workdir, config)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = read_metrics(workdir)
    probed = metrics.filter(probe="logreg", metric="accuracy")
    assert sorted(probed.select("layer", "site", "position").unique().iter_rows()) == sorted(
        [(layer, "residual", position) for layer in (0, 1, 2) for position in ("-1", "text_last", "text_mean")]
        + [(layer, site, position) for layer in (1, 2) for site in ("attn_out", "mlp_out")
           for position in ("-1", "text_last", "text_mean")])
    assert metrics.filter(site="residual", position="-1").equals(
        read_metrics(done["workdir"]).filter(site="residual", position="-1"))
    summary = pl.read_csv(workdir / "results/report/summary.csv").filter(probe="logreg")
    assert summary["best_position"][0] in ("-1", "text_last", "text_mean")
    figures = workdir / "results/report/tiny/crowd_envent"
    assert all((figures / f"{name}.png").is_file() for name in (
        "sites_by_layer", "site_layer_heatmap", "sites_by_layer_text_mean", "site_layer_heatmap_text_mean"))
    assert planned({"workdir": workdir}, config) == {}


def test_probe_setting_reruns_probes_not_extraction(done):
    config = changed(done["config"], "probes", [{"name": "logreg", "kind": "logreg", "C": 0.5}])
    assert planned(done, config) == {"fit_probe": 3, **TAIL}


def test_template_reruns_preparation_and_extraction(done):
    config = changed(done["config"], "prompt", {"template": "two_shot"})
    assert planned(done, config) == {"prepare_dataset": 1, "extract_activations": 1, **ANSWERED,
                                     "fit_probe": 3, "lexical_baseline": 1, **TAIL}


def test_model_entry_reruns_that_extraction(done):
    config = changed(done["config"], "models.tiny.quantisation", "Q8_0")
    assert planned(done, config) == {"extract_activations": 1, **ANSWERED, "fit_probe": 3, **TAIL}


def test_a_key_of_another_source_is_refused(done):
    dry = run_snakemake(done["workdir"], changed(done["config"], "models.tiny.revision", "v2"), "-n")
    assert dry.returncode != 0
    assert "'models.tiny': 'revision' does not apply to source 'local'" in dry.stdout + dry.stderr


def _copy_of_repo(root: Path) -> Path:
    copy_root = root / "repo"
    if not copy_root.exists():
        shutil.copytree(REPO, copy_root, ignore=shutil.ignore_patterns(
            ".venv", ".git", "results", ".snakemake", "tests", "__pycache__", "benchmarks", "resources"))
    return copy_root


@pytest.mark.parametrize(("module", "expected"), [
    ("report.py", {"build_report": 1, "write_provenance": 1, "all": 1}),
    ("extract.py", {"extract_activations": 1, **ANSWERED, "fit_probe": 3, **TAIL}),
])
def test_code_edits(done, module, expected, tmp_path):
    """Editing plotting code reruns only the report; editing extraction code is never ignored."""
    repo = _copy_of_repo(tmp_path)
    workdir = tmp_path / "run"
    shutil.copytree(done["workdir"], workdir, symlinks=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(done["config"]))
    command = [SNAKEMAKE, "-s", str(repo / "Snakefile"), "-d", str(workdir), "--configfile",
               str(workdir / "config.yaml"), "--replace-workflow-config", "-n"]
    before = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert job_counts(before.stdout + before.stderr) == {}, before.stdout[-2000:]
    with open(repo / "src" / "emoprobe" / module, "a") as handle:
        handle.write("\n# an edit\n")
    after = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert job_counts(after.stdout + after.stderr) == expected


def _run_until(workdir: Path, config: dict, appears: str, *extra: str) -> None:
    """Start snakemake, kill -9 its whole process group once `appears` (a glob) exists."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    command = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--configfile",
               str(workdir / "config.yaml"), "--replace-workflow-config", "--cores", "2", *extra]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not list(workdir.glob(appears)):
        assert process.poll() is None, "the run ended before the moment to kill it"
        assert time.monotonic() < deadline, f"{appears} never appeared"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _resume(workdir: Path, config: dict) -> None:
    assert run_snakemake(workdir, config, "--unlock").returncode == 0
    result = run_snakemake(workdir, config, "--rerun-incomplete")
    assert result.returncode == 0, result.stderr[-3000:]


def test_kill_during_extraction_then_rerun(done, tmp_path):
    shard_dir = "results/activations/tiny/crowd_envent/*"
    _run_until(tmp_path, done["config"], f"{shard_dir}/*.partial")
    assert not list(tmp_path.glob(f"{shard_dir}/*.safetensors")), "a shard appeared before extraction finished"
    _resume(tmp_path, done["config"])
    assert read_metrics(tmp_path).equals(read_metrics(done["workdir"]))


def test_kill_during_probe_then_rerun(done, tmp_path):
    _run_until(tmp_path, done["config"], "results/logs/fit_probe/tiny/crowd_envent/*/*.log")
    _resume(tmp_path, done["config"])
    assert read_metrics(tmp_path).equals(read_metrics(done["workdir"]))


def test_second_invocation_is_refused_by_the_lock(done, tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "config.yaml").write_text(yaml.safe_dump(done["config"]))
    command = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--configfile",
               str(workdir / "config.yaml"), "--replace-workflow-config", "--cores", "1"]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list((workdir / ".snakemake" / "locks").glob("*")):
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.05)
        second = run_snakemake(workdir, done["config"])
        assert second.returncode != 0
        assert "Directory cannot be locked" in second.stdout + second.stderr
    finally:
        assert first.wait(timeout=600) == 0
    assert read_metrics(workdir).equals(read_metrics(done["workdir"]))


def test_two_runs_give_identical_metrics(done, tmp_path):
    result = run_snakemake(tmp_path, done["config"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_metrics(tmp_path).equals(read_metrics(done["workdir"]))
    probes = sorted((done["workdir"] / "results" / "probes").rglob("*.parquet"))
    for path in probes:
        twin = tmp_path / path.relative_to(done["workdir"])
        assert pl.read_parquet(path).equals(pl.read_parquet(twin))
