"""End-to-end run over two datasets and two target kinds: crowd-enVENT's emotion label plus two
appraisal ratings (fit_probe + fit_ridge), and a custom CSV with one numeric target and its own
train/dev/test split (fit_ridge only); plus the up-front checks of dataset options."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from emoprobe.config import validate_config
from emoprobe.errors import ConfigError

from .conftest import SHARED_DATA, crowd_envent_path, job_counts, make_tiny_model, read_metrics, run_snakemake

POSITIONS = [-2, -1]
LAYERS = [0, 3]
APPRAISALS = ["pleasantness", "goal_relevance"]
N_CUSTOM = 40


def write_custom_csv(path, texts: list[str]) -> None:
    """`;`-separated cp1252 file: key, quoted sentence (with a `;` inside), valence, split."""
    rng = np.random.default_rng(0)
    splits = ["train"] * 24 + ["valid"] * 6 + ["test"] * 10
    rows = [f'k{i};"{text.replace(chr(34), "")}; café";{len(text.split()) / 10 + rng.normal():.3f};{split}'
            for i, (text, split) in enumerate(zip(texts, splits))]
    path.write_bytes(("key;sentence;valence;part\n" + "\n".join(rows) + "\n").encode("cp1252", errors="replace"))


def dataset_config(model_dir, custom_path, **changes) -> dict:
    config = {
        "data_dir": str(SHARED_DATA),
        "positions": POSITIONS,
        "layers": LAYERS,
        "probe": {"cv_folds": 3},
        "models": {"tiny": {"source": "local", "path": str(model_dir)}},
        "datasets": {
            "appraisals": {"type": "crowd_envent", "max_per_class": 5, "targets": APPRAISALS},
            "mine": {"type": "custom", "path": str(custom_path), "format": "csv", "separator": ";",
                     "encoding": "cp1252", "id_column": "key", "text_column": "sentence",
                     "target_columns": ["valence"], "split_column": "part", "official_split": True},
        },
    }
    config.update(changes)
    return config


@pytest.fixture(scope="module")
def dataset_run(tmp_path_factory):
    from emoprobe.data import crowd_envent

    texts = crowd_envent.load(crowd_envent_path())["text"].head(N_CUSTOM).to_list()
    root = tmp_path_factory.mktemp("datasets")
    write_custom_csv(root / "mine.csv", texts)
    config = dataset_config(make_tiny_model(root / "tiny", "llama"), root / "mine.csv")
    workdir = root / "run"
    dry = run_snakemake(workdir, config, "-n")
    result = run_snakemake(workdir, config)
    assert result.returncode == 0, result.stderr[-4000:]
    return {"workdir": workdir, "config": config, "dry": dry}


def test_classification_and_ridge_jobs_per_dataset(dataset_run):
    assert job_counts(dataset_run["dry"].stdout + dataset_run["dry"].stderr) == {
        "prepare_dataset": 2, "extract_activations": 2,
        "collect_answers": 1, "score_answers": 1,  # the answers on appraisals (the custom file has no labels)
        "fit_probe": len(LAYERS),       # appraisals only: the custom file has no label column
        "fit_ridge": 2 * len(LAYERS),   # one job per layer fits all of a dataset's positions and targets
        "lexical_baseline": 1, "lexical_ridge": 2, "compare_with_lexical": 2,
        "aggregate_metrics": 1, "build_report": 1, "write_provenance": 1, "all": 1}
    probes = dataset_run["workdir"] / "results" / "probes" / "tiny"
    # scores and held-out predictions of both kinds: .parquet, .ridge.parquet, and their .predictions
    assert len(list(probes.glob("appraisals/layer_*/positions_*.parquet"))) == 4 * len(LAYERS)
    assert len(list(probes.glob("appraisals/layer_*/positions_*.logreg.parquet"))) == len(LAYERS)
    assert len(list(probes.glob("appraisals/layer_*/positions_*.ridge.predictions.parquet"))) == len(LAYERS)
    assert not list(probes.glob("mine/layer_*/positions_*[0-9].parquet"))


def test_prepared_tables_carry_targets_and_split(dataset_run):
    data = dataset_run["workdir"] / "results" / "data"
    appraisals = pl.read_parquet(data / "appraisals.parquet")
    assert appraisals.columns == ["id", "text", "prompt", "label", "label_id", *APPRAISALS]
    assert appraisals.height == 13 * 5
    mine = pl.read_parquet(data / "mine.parquet")
    assert mine.columns == ["id", "text", "prompt", "label", "label_id", "split", "valence"]
    assert mine.height == N_CUSTOM and mine["id"][0] == "k0" and mine["text"][0].endswith("; café")
    assert mine["label"].null_count() == N_CUSTOM
    assert dict(mine["split"].value_counts().iter_rows()) == {"train": 24, "dev": 6, "test": 10}


def test_metrics_rows_per_target(dataset_run):
    metrics = read_metrics(dataset_run["workdir"])
    assert metrics.columns == ["model", "dataset", "target", "layer", "site", "position", "probe", "metric", "mean", "std",
                               "pooled", "ci_low", "ci_high", "n_folds", "n_layers", "n_classes", "dtype", "n_rows"]
    assert metrics.select("model", "dataset", "target", "layer", "site", "position", "probe", "metric").is_unique().all()
    sweep = len(LAYERS) * len(POSITIONS)
    rows = {(d, t, p, m): n for d, t, p, m, n in
            metrics.group_by("dataset", "target", "probe", "metric").len().iter_rows()}
    class_metrics = ("accuracy", "balanced_accuracy", "macro_f1")
    classification = {("appraisals", "label", probe, metric): sweep for probe in ("logreg", "majority", "logreg_shuffled")
                      for metric in class_metrics}
    targets = [(dataset, target) for dataset, names in (("appraisals", APPRAISALS), ("mine", ["valence"]))
               for target in names]
    regression = {(dataset, target, probe, metric): sweep for dataset, target in targets
                  for probe, metric in (("ridge", "r2"), ("ridge", "pearson_r"), ("ridge", "alpha"), ("mean", "r2"))}
    # The lexical baseline: one row per metric (no layer or position), for the classes and each target.
    lexical = ({("appraisals", "label", "lexical", metric): 1 for metric in class_metrics}
               | {(dataset, target, "lexical", metric): 1 for dataset, target in targets
                  for metric in ("r2", "pearson_r")})
    answer = {("appraisals", "label", "answer", metric): 1
              for metric in ("accuracy", "balanced_accuracy", "macro_f1", "top1_is_label_word")}
    assert rows == classification | regression | lexical | answer
    labelled = metrics.filter((pl.col("target") == "label") & (pl.col("probe") != "answer"))
    assert set(labelled["n_classes"]) == {13} and set(labelled["n_folds"]) == {3}
    ridge = metrics.filter(pl.col("target") != "label")
    assert ridge["n_classes"].null_count() == ridge.height
    assert set(ridge.filter(pl.col("dataset") == "appraisals")["n_folds"]) == {3}
    assert ridge.filter(pl.col("probe") == "lexical")["layer"].null_count() == 2 * 3
    assert set(ridge.filter(pl.col("dataset") == "mine")["n_folds"]) == {1}  # official split: one test fold
    assert np.isfinite(ridge.filter(pl.col("metric") == "r2")["mean"].to_numpy()).all()


def test_lexical_ridge_is_compared_row_for_row(dataset_run):
    """The lexical ridge holds out the ridge probes' rows (the official split's 10 test rows for
    the custom file); the comparison table's R2 differences are recomputed with sklearn."""
    from sklearn.metrics import r2_score

    results = dataset_run["workdir"] / "results"
    vs = pl.read_parquet(results / "metrics" / "vs_lexical.parquet")
    assert set(vs.filter(pl.col("target") == "label")["metric"]) == {"accuracy"}
    ridge = vs.filter(pl.col("probe") == "ridge")
    assert set(ridge["metric"]) == {"r2"} and ridge.height == 3 * len(LAYERS) * len(POSITIONS)
    for dataset, target in (("mine", "valence"), ("appraisals", "pleasantness")):
        truth = pl.read_parquet(results / "data" / f"{dataset}.parquet")[target].to_numpy()
        words = pl.read_parquet(results / "baselines" / dataset / "lexical.ridge.predictions.parquet").filter(
            target=target).sort("row")
        if dataset == "mine":
            assert words.height == 10 and set(words["fold"]) == {0}
        for layer in LAYERS:
            probe = pl.read_parquet(next((results / "probes" / "tiny" / dataset / f"layer_{layer}").glob(
                "*.ridge.predictions.parquet"))).filter(probe="ridge", target=target, position="-1").sort("row")
            assert probe.select("row", "fold").equals(words.select("row", "fold"))
            rows = probe["row"].to_numpy()
            expected = (r2_score(truth[rows], probe["predicted"].to_numpy())
                        - r2_score(truth[rows], words["predicted"].to_numpy()))
            row = vs.filter(dataset=dataset, target=target, layer=layer, position="-1").row(0, named=True)
            assert row["difference"] == pytest.approx(expected, abs=1e-9)


def test_ridge_floor_is_the_mean_predictor(dataset_run):
    floor = read_metrics(dataset_run["workdir"]).filter((pl.col("probe") == "mean") & (pl.col("metric") == "r2"))
    assert floor.height == 3 * len(LAYERS) * len(POSITIONS)
    assert (floor["mean"] <= 1e-12).all()  # a constant prediction never beats R2 = 0 on held-out rows
    per_target = floor.group_by("dataset", "target").agg(pl.col("mean").n_unique().alias("values"))
    assert set(per_target["values"]) == {1}  # it ignores the activations: the same at every layer


def test_regression_report(dataset_run):
    report = dataset_run["workdir"] / "results" / "report"
    for dataset in ("appraisals", "mine"):
        for name in ("r2_by_layer", "target_layer_heatmap"):
            png = report / "tiny" / dataset / f"{name}.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
            assert "vega" in png.with_suffix(".html").read_text()
    assert "position -1" in (report / "tiny" / "mine" / "r2_by_layer.html").read_text()
    assert (report / "tiny" / "appraisals" / "accuracy_by_layer.png").exists()
    assert not (report / "tiny" / "mine" / "accuracy_by_layer.png").exists()
    index = (report / "index.html").read_text()
    assert "tiny/mine/r2_by_layer.png" in index and "tiny/appraisals/target_layer_heatmap.png" in index
    summary = pl.read_csv(report / "summary.csv")
    assert summary.select("dataset", "target", "probe", "score_metric").rows() == [
        ("appraisals", "label", "logreg", "accuracy"),
        ("appraisals", "goal_relevance", "ridge", "r2"),
        ("appraisals", "pleasantness", "ridge", "r2"),
        ("mine", "valence", "ridge", "r2"),
    ]
    ridge = summary.filter(pl.col("probe") == "ridge")
    assert ridge["chance"].null_count() == 3 and (ridge["floor"] <= 1e-12).all()
    # Each target's best cell and floor, recomputed from the metrics table by brute force.
    metrics = read_metrics(dataset_run["workdir"])
    for row in ridge.iter_rows(named=True):
        of_target = metrics.filter((pl.col("dataset") == row["dataset"]) & (pl.col("target") == row["target"])
                                   & (pl.col("metric") == "r2"))
        cells = {(layer, position): mean for layer, position, mean
                 in of_target.filter(pl.col("probe") == "ridge").select("layer", "position", "mean").rows()}
        top = max(cells.values())
        layer, minus_position = min((layer, -int(position)) for (layer, position), mean in cells.items() if mean == top)
        assert (row["best_layer"], row["best_position"], row["candidates"]) == (layer, -minus_position, len(cells))
        assert row["score"] == pytest.approx(top)
        assert row["floor"] == pytest.approx(of_target.filter(pl.col("probe") == "mean")["mean"].max())


def test_a_classification_setting_reruns_no_ridge_job(dataset_run):
    config = dataset_run["config"] | {"probes": [{"name": "logreg", "kind": "logreg", "C": 0.5}]}
    dry = run_snakemake(dataset_run["workdir"], config, "-n")
    assert job_counts(dry.stdout + dry.stderr) == {"fit_probe": len(LAYERS), "compare_with_lexical": 1,
                                                   "aggregate_metrics": 1, "build_report": 1, "write_provenance": 1, "all": 1}


def test_bad_dataset_option_stops_before_any_job(tmp_path):
    models = {"tiny": {"source": "local", "path": str(tmp_path)}}
    config = {"models": models, "datasets": {"isear": {"type": "isear", "labels": "ekman"}}}
    result = run_snakemake(tmp_path / "run", config)
    assert result.returncode != 0
    assert "config key 'datasets.isear': 'labels' does not apply to type 'isear'" in result.stderr + result.stdout
    assert not (tmp_path / "run" / "results").exists()


MINIMAL_MODELS = {"m": {"source": "local", "path": "/tmp/m"}}


@pytest.mark.parametrize(("dataset", "message"), [
    ({"type": "goemotions", "labels": "ekmann"}, r"^invalid configuration:\n  config key 'datasets.d.labels': "
                                                 r"'ekmann' is not one of \['single_label', 'ekman', 'raw'\]$"),
    ({"type": "emobank", "labels": "raw"}, r"'datasets.d': 'labels' does not apply to type 'emobank'.*targets"),
    ({"type": "custom"}, r"'datasets.d': 'path' is a required property"),
    ({"type": "custom", "path": "x.csv"}, r"'datasets.d': nothing to probe.*label_column.*target_columns"),
    ({"type": "custom", "path": "x.csv", "target_columns": ["split"]}, r"'datasets.d': target columns \['split'\] "
                                                                       r"clash"),
    ({"type": "emobank", "max_per_class": 10}, r"'datasets.d': max_per_class needs class labels"),
    ({"type": "crowd_envent", "targets": ["valence"]}, r"'datasets.d.targets'"),
])
def test_dataset_options_are_checked_up_front(dataset, message):
    with pytest.raises(ConfigError, match=message):
        validate_config({"models": MINIMAL_MODELS, "datasets": {"d": dataset}})


def test_dataset_defaults_are_filled_per_type(tmp_path):
    (tmp_path / "x.csv").write_text("text,y\na,b\n")
    datasets = validate_config({"models": MINIMAL_MODELS, "datasets": {
        "go": {"type": "goemotions"}, "eb": {"type": "emobank"}, "ce": {"type": "crowd_envent"},
        "mine": {"type": "custom", "path": str(tmp_path / "x.csv"), "label_column": "y"}}})["datasets"]
    assert datasets["go"]["labels"] == "single_label" and datasets["go"]["official_split"] is False
    assert datasets["eb"]["targets"] == ["V", "A", "D"] and "targets" not in datasets["go"]
    assert datasets["ce"]["targets"] == [] and datasets["ce"]["bad_rows"] == "error"
    assert datasets["mine"]["encoding"] == "utf-8" and datasets["mine"]["header"] is True
