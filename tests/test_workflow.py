"""End-to-end Snakemake runs: DAG, shards, metrics, report, incremental reruns, bad input."""

from __future__ import annotations

import json

import polars as pl
import pytest
from safetensors import safe_open

from emoprobe.data.sources import sha256_of
from emoprobe.parts import part_name
from emoprobe.shards import size_problem

from .conftest import SHARED_DATA, SMOLLM2, crowd_envent_path, job_counts, require_smollm2, make_tiny_model, read_metrics, run_snakemake

POSITIONS = [-1, -2]


def tiny_config(models: dict, **changes) -> dict:
    config = {
        "data_dir": str(SHARED_DATA),
        "positions": POSITIONS,
        "probe": {"cv_folds": 3},
        "models": models,
        "datasets": {"crowd_envent": {"type": "crowd_envent", "max_per_class": 6}},
    }
    config.update(changes)
    return config


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One complete run of a tiny Llama (3 blocks -> layers 0..3) on 78 crowd-enVENT texts."""
    crowd_envent_path()
    root = tmp_path_factory.mktemp("e2e")
    models = {"tiny-llama": {"source": "local", "path": str(make_tiny_model(root / "tiny-llama", "llama"))}}
    workdir = root / "run"
    config = tiny_config(models)
    dry = run_snakemake(workdir, config, "-n")
    result = run_snakemake(workdir, config)
    assert result.returncode == 0, result.stderr[-4000:]
    return {"root": root, "workdir": workdir, "config": config, "dry": dry, "result": result}


def test_dag_has_one_probe_job_per_model_dataset_layer(finished_run):
    """A probe job fits every position of its layer: one Python start per layer."""
    counts = job_counts(finished_run["dry"].stdout + finished_run["dry"].stderr)
    assert counts == {"prepare_dataset": 1, "extract_activations": 1, "collect_answers": 1, "score_answers": 1,
                      "fit_probe": 4, "lexical_baseline": 1, "compare_with_lexical": 1, "aggregate_metrics": 1,
                      "build_report": 1, "write_provenance": 1, "all": 1}


def test_shards_have_contract_shape_and_metadata(finished_run):
    results = finished_run["workdir"] / "results"
    table = pl.read_parquet(results / "data" / "crowd_envent.parquet")
    assert table.columns == ["id", "text", "prompt", "label", "label_id"] and table.height == 78
    (shard_dir,) = (results / "activations" / "tiny-llama" / "crowd_envent").iterdir()
    assert shard_dir.name == part_name(range(4), POSITIONS)  # one part: every layer and position
    assert sorted(p.name for p in shard_dir.glob("*.safetensors")) == [f"layer_{i}.safetensors" for i in range(4)]
    with safe_open(str(shard_dir / "layer_2.safetensors"), framework="numpy") as handle:
        meta = handle.metadata()
        assert handle.get_slice("activations").get_shape() == [78, len(POSITIONS), 32]
    assert meta["layer"] == "2" and meta["n_layers"] == "3" and json.loads(meta["positions"]) == sorted(POSITIONS)
    assert meta["prepared_sha256"] == sha256_of(results / "data" / "crowd_envent.parquet")
    assert meta["source"] == "local" and meta["dtype"] == "float32" and meta["n_rows"] == "78"
    assert "{text}" in meta["prompt_template"]


def test_metrics_table_is_tidy(finished_run):
    metrics = read_metrics(finished_run["workdir"])
    assert metrics.columns == ["model", "dataset", "target", "layer", "site", "position", "probe", "metric", "mean", "std",
                               "pooled", "ci_low", "ci_high", "n_folds", "n_layers", "n_classes", "dtype", "n_rows"]
    probed = metrics.filter(pl.col("model").is_not_null() & (pl.col("probe") != "answer"))
    assert set(probed["dtype"]) == {"float32"}  # CPU extraction
    assert probed.height == 4 * len(POSITIONS) * 3 * 3  # layers x positions x probes x metrics
    assert set(probed["probe"]) == {"logreg", "majority", "logreg_shuffled"}
    # The model's own answer: one row per metric, no layer or position, on all 78 texts.
    answer = metrics.filter(probe="answer")
    assert sorted(answer["metric"]) == ["accuracy", "balanced_accuracy", "macro_f1", "top1_is_label_word"]
    assert answer["layer"].null_count() == 4 and set(answer["n_rows"]) == {78} and set(answer["dtype"]) == {"float32"}
    # The lexical baseline reads no model: one row per metric, model, layer, position and dtype null.
    lexical = metrics.filter(pl.col("model").is_null())
    assert lexical.height == 3 and set(lexical["probe"]) == {"lexical"} and set(lexical["dataset"]) == {"crowd_envent"}
    assert lexical.select("layer", "site", "position", "n_layers", "dtype").null_count().row(0) == (3, 3, 3, 3, 3)
    assert set(probed["site"]) == {"residual"} and answer["site"].null_count() == 4
    assert set(metrics["metric"]) == {"accuracy", "balanced_accuracy", "macro_f1", "top1_is_label_word"}
    assert set(metrics["target"]) == {"label"}  # no regression targets configured
    assert set(metrics.filter(pl.col("probe") != "answer")["n_folds"]) == {3} and set(metrics["n_classes"]) == {13}
    assert set(answer["n_folds"]) == {1}  # one "fold" holding every text
    assert metrics.select("model", "dataset", "target", "layer", "site", "position", "probe", "metric").is_unique().all()
    majority = metrics.filter((pl.col("probe") == "majority") & (pl.col("metric") == "accuracy"))
    assert majority["mean"].max() < 0.12  # balanced classes: 1/13
    csv = pl.read_csv(finished_run["workdir"] / "results" / "metrics" / "probe_metrics.csv")
    assert csv.height == metrics.height


def test_held_out_predictions_back_the_pooled_scores(finished_run):
    """Each probe job keeps one prediction per (position, probe, row); the table's pooled accuracy
    is recomputed from them and the prepared labels, and lies inside its CI."""
    results = finished_run["workdir"] / "results"
    labels = pl.read_parquet(results / "data" / "crowd_envent.parquet")["label_id"].to_numpy()
    metrics = read_metrics(finished_run["workdir"]).filter(pl.col("metric") == "accuracy")
    files = sorted((results / "probes" / "tiny-llama" / "crowd_envent").glob("layer_*/*.logreg.predictions.parquet"))
    assert len(files) == 4
    for path in files:
        predictions = pl.read_parquet(path)
        assert predictions.columns == ["position", "row", "fold", "probe", "predicted", "p_true"]
        layer = int(path.parent.name.removeprefix("layer_"))
        for (position, probe), group in predictions.group_by("position", "probe"):
            assert group["row"].sort().to_list() == list(range(len(labels)))
            row = metrics.filter((pl.col("layer") == layer) & (pl.col("position") == position)
                                 & (pl.col("probe") == probe)).row(0, named=True)
            accuracy = float((group["predicted"].to_numpy() == labels[group["row"].to_numpy()]).mean())
            assert row["pooled"] == pytest.approx(accuracy)
            assert row["ci_low"] <= accuracy <= row["ci_high"]


def test_report_files(finished_run):
    report = finished_run["workdir"] / "results" / "report"
    for name in ("accuracy_by_layer", "layer_position_heatmap"):
        png = report / "tiny-llama" / "crowd_envent" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
        assert "vega" in (png.with_suffix(".html")).read_text()
    index = (report / "index.html").read_text()
    assert "tiny-llama" in index and "best_layer" in index and "relative_depth.png" in index
    assert not list(report.glob("*/*/r2_by_layer.*"))  # no numeric targets, no regression figures
    summary = pl.read_csv(report / "summary.csv")
    assert summary.columns == ["model", "dataset", "target", "probe", "score_metric", "best_layer", "best_site", "best_position",
                               "n_layers", "score", "score_std", "score_ci_low", "score_ci_high", "candidates",
                               "first_layer_within_tolerance", "floor", "chance", "answer", "answer_ci_low",
                               "answer_ci_high", "shuffled", "selectivity",
                               "selectivity_ci_low", "selectivity_ci_high", "lexical",
                               "lexical_ci_low", "lexical_ci_high", "best_minus_lexical", "best_minus_lexical_ci_low",
                               "best_minus_lexical_ci_high", "layers_beating_lexical"]
    assert summary.select("target", "probe", "score_metric").rows() == [("label", "logreg", "accuracy")]
    # The best cell, recomputed from the metrics table by brute force (ties: earlier layer, then position -1).
    accuracy = read_metrics(finished_run["workdir"]).filter((pl.col("probe") == "logreg")
                                                            & (pl.col("metric") == "accuracy"))
    cells = {(layer, position): mean for layer, position, mean in accuracy.select("layer", "position", "mean").rows()}
    top = max(cells.values())
    best = min((layer, -int(position)) for (layer, position), mean in cells.items() if mean == top)
    row = summary.row(0, named=True)
    assert (row["best_layer"], row["best_position"]) == (best[0], -best[1])
    assert row["score"] == pytest.approx(top) and row["candidates"] == len(cells) == 4 * len(POSITIONS)
    assert row["chance"] == pytest.approx(1 / 13)
    majority = read_metrics(finished_run["workdir"]).filter((pl.col("probe") == "majority")
                                                            & (pl.col("metric") == "accuracy"))
    assert row["floor"] == pytest.approx(majority["mean"].max()) and row["floor"] < 0.12  # 13 balanced classes
    # The paired comparison at the best cell, and the layers beating the words there, from vs_lexical.
    vs = pl.read_parquet(finished_run["workdir"] / "results" / "metrics" / "vs_lexical.parquet")
    at_best = vs.filter(layer=row["best_layer"], position=str(row["best_position"]), probe="logreg").row(0, named=True)
    assert row["best_minus_lexical"] == pytest.approx(at_best["difference"])
    assert (row["best_minus_lexical_ci_low"], row["best_minus_lexical_ci_high"]) == (at_best["ci_low"], at_best["ci_high"])
    beating = vs.filter(position=str(row["best_position"]), probe="logreg").filter(pl.col("ci_low") > 0)["layer"]
    assert row["layers_beating_lexical"] == (", ".join(map(str, sorted(beating))) or "none")
    assert "Beats the words?" in index
    for chart in ("accuracy_by_layer",):
        spec = (report / "tiny-llama" / "crowd_envent" / f"{chart}.html").read_text()
        assert "lexical baseline" in spec and "shuffled-label control" in spec


def _figures(report):
    """Every figure stem of the report (one .png each)."""
    return sorted(path.with_suffix("") for path in report.rglob("*.png"))


def test_every_figure_is_also_a_paper_svg_and_pdf(finished_run):
    """Each figure has an SVG and a PDF drawn 3.5 in (one column) or 7 in (the page) wide, whose
    smallest text, scaled to that width, is legible (>= 6.5 pt) in every column figure."""
    import re

    report = finished_run["workdir"] / "results" / "report"
    stems = _figures(report)
    assert len(stems) == 4  # accuracy_by_layer, layer_position_heatmap, answer_confusion, relative_depth
    widths = {}
    for stem in stems:
        svg = stem.with_suffix(".svg").read_text()
        inches, view_width = re.search(r'<svg[^>]* width="([\d.]+)in"[^>]* viewBox="0 0 ([\d.]+)', svg).groups()
        inches, view_width = float(inches), float(view_width)
        assert inches in (3.5, 7.0)
        smallest = min(map(float, re.findall(r'font-size="([\d.]+)px"', svg))) * inches * 72 / view_width
        if inches == 3.5:
            assert smallest >= 6.5, stem
        widths[stem.name] = inches
        pdf = stem.with_suffix(".pdf").read_bytes()
        assert pdf.startswith(b"%PDF")
        media = re.search(rb"/MediaBox \[0 0 ([\d.]+) ([\d.]+)\]", pdf)
        assert float(media.group(1)) == pytest.approx(inches * 72, abs=0.5)  # points: 3.5 in = 252 pt
        # the paper files carry no title: the caption in methods.md does
        assert "tiny-llama on crowd_envent" not in svg
    assert widths["accuracy_by_layer"] == 3.5 and widths["layer_position_heatmap"] == 3.5
    methods = (report / "methods.md").read_text()
    for stem in stems:
        assert f"`{stem.relative_to(report).as_posix()}` (.svg, .pdf: " in methods


def test_methods_section_states_the_facts(finished_run):
    """methods.md, from the config, prepared table and shards, against independent reads of each."""
    import importlib.metadata
    import subprocess

    from emoprobe.config import PROMPT_TEMPLATES

    from .conftest import REPO

    results = finished_run["workdir"] / "results"
    methods = (results / "report" / "methods.md").read_text()
    raw = crowd_envent_path()
    rows_in_file = pl.read_csv(raw.read_bytes().decode("cp1252").encode(), infer_schema_length=0).height
    table = pl.read_parquet(results / "data" / "crowd_envent.parquet")
    assert (f"{rows_in_file:,} rows read from `{raw}` (sha256 {sha256_of(raw)}); dropped: "
            f"{rows_in_file - table.height:,} by `max_per_class: 6`; {table.height} texts kept in 13 classes") in methods
    assert f"verbatim: `{PROMPT_TEMPLATES['zero_shot']}`" in methods
    assert "at layers 0 to 3 of tiny-llama; at token positions -1, -2" in methods
    assert "3-fold cross-validation" in methods and "(seed 0)" in methods
    assert "1,000 bootstrap resamples" in methods
    for package in ("torch", "transformers", "scikit-learn", "snakemake"):
        assert f"{package} {importlib.metadata.version(package)}" in methods
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert f"emoprobe workflow commit {commit}" in methods
    assert "Lexical baseline" in methods and "Shuffled-label control" in methods
    index = (results / "report" / "index.html").read_text()
    assert '<section id="methods">' in index and "<h3>Prompt</h3>" in index


def test_headline_sentence_states_the_summary(finished_run):
    """The page opens with the finding: its numbers are the summary table's."""
    import html

    report = finished_run["workdir"] / "results" / "report"
    row = pl.read_csv(report / "summary.csv").row(0, named=True)
    index = html.unescape((report / "index.html").read_text())
    findings = index[index.index('<section id="findings">'):index.index("</section>")]
    assert (f"reads the emotion label best at layer {row['best_layer']} of {row['n_layers']} (position "
            f"{row['best_position']}), accuracy {row['score']:.3f} [{row['score_ci_low']:.3f}, "
            f"{row['score_ci_high']:.3f}]") in findings
    assert f"against {row['lexical']:.3f} [{row['lexical_ci_low']:.3f}, {row['lexical_ci_high']:.3f}]" in findings
    assert ("no layer beats the words" in findings) == (row["layers_beating_lexical"] == "none")
    assert f"best of {row['candidates']} cross-validated cells" in findings
    # the table of contents links every section
    for anchor in ("findings", "methods", "all-models-by-relative-depth", "tiny-llama-on-crowd-envent",
                   "summary-table"):
        assert f'href="#{anchor}"' in index and f'id="{anchor}"' in index


def test_report_page_opens_in_a_browser_without_errors(finished_run, tmp_path):
    """index.html and an interactive chart, offline in headless Chromium: no console error, every
    image loads, and the chart is drawn from the vega.js beside the page."""
    from .browser import check_page, chromium_available

    from .conftest import require

    require(chromium_available(), "chromium is not installed (make browser)")
    report = finished_run["workdir"] / "results" / "report"
    page = check_page(report / "index.html", tmp_path / "index.png")
    assert page.console_errors == [] and page.broken_images == []
    assert page.screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    chart = check_page(report / "tiny-llama" / "crowd_envent" / "accuracy_by_layer.html", tmp_path / "chart.png")
    assert chart.console_errors == []
    assert "cdn" not in (report / "tiny-llama" / "crowd_envent" / "accuracy_by_layer.html").read_text()


def test_provenance_manifest(finished_run):
    """provenance.json: the raw file's and the model's sha256 (recomputed here), package
    versions, and each table's job and inputs, checked against the workflow's own rules."""
    import importlib.metadata

    results = finished_run["workdir"] / "results"
    manifest = json.loads((results / "report" / "provenance.json").read_text())
    raw = crowd_envent_path()
    assert manifest["data"] == {"crowd_envent": [{"path": str(raw), "sha256": sha256_of(raw)}]}
    model_dir = finished_run["root"] / "tiny-llama"
    files = {entry["file"]: entry["sha256"] for entry in manifest["models"]["tiny-llama"]["files"]}
    assert files[str(model_dir / "model.safetensors")] == sha256_of(model_dir / "model.safetensors")
    assert manifest["packages"]["torch"] == importlib.metadata.version("torch")
    assert manifest["config"]["probe"]["cv_folds"] == 3 and manifest["workflow"]["commit"]
    tables = manifest["tables"]
    assert tables["results/metrics/probe_metrics.parquet"]["rule"] == "aggregate_metrics"
    assert tables["results/data/crowd_envent.parquet"]["rule"] == "prepare_dataset"
    probe = tables["results/probes/tiny-llama/crowd_envent/layer_2/positions_-2to-1.logreg.parquet"]
    assert probe["rule"] == "fit_probe" and "results/data/crowd_envent.parquet" in probe["inputs"]


def test_snakemake_report_holds_every_figure(finished_run, tmp_path):
    """`snakemake --report` still builds, with each figure under its category."""
    import zipfile

    report = tmp_path / "report.zip"
    result = run_snakemake(finished_run["workdir"], finished_run["config"], "--report", str(report))
    assert result.returncode == 0, result.stderr[-3000:]
    names = zipfile.ZipFile(report).namelist()
    for figure in ("accuracy_by_layer.png", "layer_position_heatmap.png", "answer_confusion.png",
                   "relative_depth.png"):
        assert any(name.endswith(figure) for name in names), figure


def test_lexical_baseline_sees_the_probes_test_rows(finished_run):
    """The lexical baseline and every probe job hold out the same rows in the same folds, so the
    comparison table's differences are paired row for row; recomputed here by hand."""
    results = finished_run["workdir"] / "results"
    labels = pl.read_parquet(results / "data" / "crowd_envent.parquet")["label_id"].to_numpy()
    lexical = pl.read_parquet(results / "baselines" / "crowd_envent" / "lexical.predictions.parquet")
    assert lexical.columns == ["row", "fold", "probe", "predicted", "p_true"]
    folds_of = lexical.select("row", "fold").sort("row")
    vs = pl.read_parquet(results / "metrics" / "vs_lexical.parquet")
    assert vs.columns == ["model", "dataset", "target", "layer", "site", "position", "probe", "metric", "score", "lexical",
                          "difference", "ci_low", "ci_high", "n_rows", "beats_lexical"]
    assert vs.height == 4 * len(POSITIONS) and set(vs["probe"]) == {"logreg"} and set(vs["n_rows"]) == {78}
    words_right = lexical.sort("row")["predicted"].to_numpy() == labels
    for path in sorted((results / "probes" / "tiny-llama" / "crowd_envent").glob("layer_*/*.logreg.predictions.parquet")):
        layer = int(path.parent.name.removeprefix("layer_"))
        for (position,), group in pl.read_parquet(path).filter(probe="logreg").group_by("position"):
            assert group.select("row", "fold").sort("row").equals(folds_of)
            probe_right = group.sort("row")["predicted"].to_numpy() == labels
            row = vs.filter(layer=layer, position=position).row(0, named=True)
            assert row["difference"] == pytest.approx(probe_right.mean() - words_right.mean())
            assert row["ci_low"] <= row["difference"] <= row["ci_high"]
            assert row["beats_lexical"] == (row["ci_low"] > 0)


def test_adding_a_model_schedules_only_its_jobs(finished_run):
    second = make_tiny_model(finished_run["root"] / "tiny-gpt2", "gpt2", n_layers=2)
    config = dict(finished_run["config"])
    config["models"] = {**config["models"], "tiny-gpt2": {"source": "local", "path": str(second)}}
    dry = run_snakemake(finished_run["workdir"], config, "-n")
    assert dry.returncode == 0, dry.stderr[-3000:]
    # The lexical baseline reads no model: it is not rerun; the new model gets its own comparison.
    assert job_counts(dry.stdout + dry.stderr) == {"extract_activations": 1, "collect_answers": 1, "score_answers": 1,
                                                   "fit_probe": 3, "compare_with_lexical": 1, "aggregate_metrics": 1,
                                                   "build_report": 1, "write_provenance": 1, "all": 1}
    assert "tiny-llama/crowd_envent/layer" not in dry.stdout.split("rule aggregate_metrics")[0]


def test_rerun_with_nothing_changed_does_nothing(finished_run):
    dry = run_snakemake(finished_run["workdir"], finished_run["config"], "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr


@pytest.mark.parametrize("damage", ["truncate", "delete", "garble_header"])
def test_damaged_part_is_found_when_the_dag_is_built(finished_run, tmp_path, damage):
    """A shard cut short, deleted or with a garbled header: `snakemake -n` (which would otherwise
    say "Nothing to be done", the folder being present) stops naming the shard and the command
    that works; that command re-extracts the part, and the next run refits just its probes."""
    import shutil

    workdir = tmp_path / "copy"
    shutil.copytree(finished_run["workdir"] / "results", workdir / "results")
    shutil.copytree(finished_run["workdir"] / ".snakemake", workdir / ".snakemake")
    (shard,) = (workdir / "results" / "activations" / "tiny-llama" / "crowd_envent").glob("*/layer_1.safetensors")
    data = shard.read_bytes()
    if damage == "truncate":
        shard.write_bytes(data[:-100])
    elif damage == "delete":
        shard.unlink()
    else:
        shard.write_bytes(data[:8] + b"#" + data[9:])
    dry = run_snakemake(workdir, finished_run["config"], "-n")
    output = dry.stdout + dry.stderr
    assert dry.returncode != 0
    assert f"{shard.relative_to(workdir)}: it" in output, output[-2000:]
    folder = str(shard.parent.relative_to(workdir))
    assert f"rm -r {folder} && snakemake {folder}" in output
    shutil.rmtree(shard.parent)
    rebuilt = run_snakemake(workdir, finished_run["config"], folder)
    assert rebuilt.returncode == 0 and shard.exists() and size_problem(shard) is None
    again = run_snakemake(workdir, finished_run["config"], "-n")
    assert job_counts(again.stdout + again.stderr) == {"collect_answers": 1, "score_answers": 1, "fit_probe": 4,
                                                       "compare_with_lexical": 1, "aggregate_metrics": 1,
                                                       "build_report": 1, "write_provenance": 1, "all": 1}


@pytest.mark.parametrize(("change", "message"), [
    ({"positions": [-1, 0]}, "0 is not valid: a position is a negative integer"),
    ({"positions": [-1, -1]}, "duplicated"),
    ({"models": {}}, "'models': is empty"),
    ({"seed": "x"}, "'seed': 'x' is not of type 'integer'"),
    ({"modles": {}}, "'modles' was unexpected"),
    ({"layers": [0, 9]}, "out of range for model 'tiny'"),
])
def test_bad_config_stops_before_any_job(tmp_path, change, message):
    models = {"tiny": {"source": "local", "path": str(make_tiny_model(tmp_path / "tiny", "llama"))}}
    result = run_snakemake(tmp_path / "run", tiny_config(models) | change)
    assert result.returncode != 0
    assert message in result.stderr + result.stdout
    assert not (tmp_path / "run" / "results").exists()


def test_pinned_gguf_with_another_sha256_stops_before_any_job(tmp_path):
    """The real SmolLM2 GGUF pinned to a wrong hash: refused while the DAG is built."""
    require_smollm2()
    spec = SMOLLM2 | {"sha256": "0" * 64}
    result = run_snakemake(tmp_path / "run", tiny_config({"smollm2": spec}), "-n")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "SmolLM2-135M-Instruct.Q4_1.gguf has sha256 " in output and f"`sha256: {'0' * 64}`" in output
    assert not (tmp_path / "run" / "results").exists()


def test_sha_mismatch_fails_prepare_and_leaves_no_table(tmp_path):
    data_dir = tmp_path / "data" / "crowd_envent"
    data_dir.mkdir(parents=True)
    data_dir.joinpath("enVent_gen_Data.csv").write_bytes(crowd_envent_path().read_bytes()[:-10])
    models = {"tiny": {"source": "local", "path": str(make_tiny_model(tmp_path / "tiny", "llama"))}}
    result = run_snakemake(tmp_path / "run", tiny_config(models, data_dir=str(tmp_path / "data")))
    assert result.returncode != 0
    assert "sha256 mismatch" in result.stderr
    assert not (tmp_path / "run" / "results" / "data" / "crowd_envent.parquet").exists()


@pytest.mark.slow
def test_real_smollm2_finds_emotion_above_majority(tmp_path):
    """The real pretrained SmolLM2-135M-Instruct (4-bit GGUF) on 40 texts per class."""
    require_smollm2()
    config = tiny_config({"smollm2": SMOLLM2}, layers=[0, 10, 20, 30], positions=[-1],
                         probe={"cv_folds": 5},
                         datasets={"crowd_envent": {"type": "crowd_envent", "max_per_class": 40}})
    result = run_snakemake(tmp_path, config)
    assert result.returncode == 0, result.stderr[-4000:]
    accuracy = read_metrics(tmp_path).filter((pl.col("probe") == "logreg") & (pl.col("metric") == "accuracy"))
    by_layer = dict(accuracy.select("layer", "mean").iter_rows())
    majority = 1 / 13
    assert by_layer[0] == pytest.approx(majority, abs=0.02)  # every prompt ends in the same token
    assert max(by_layer.values()) > majority + 0.08
    (shard,) = tmp_path.glob("results/activations/smollm2/crowd_envent/*/layer_30.safetensors")
    meta = safe_open(str(shard), framework="numpy").metadata()
    assert meta["quantisation"] == "Q4_1" and meta["revision"] == "0.1.2" and meta["n_layers"] == "30"
