"""type: huggingface through the real `datasets` library: local save_to_disk folders, parquet and
csv files, ClassLabel names, and the Hub path's error offline (this machine has no internet)."""

from __future__ import annotations

import datasets
import polars as pl
import pytest

from emoprobe.config import validate_config
from emoprobe.data.prepare import PREPARED_COLUMNS, prepare
from emoprobe.errors import ConfigError, DataError

TEMPLATE = "Text: {text} Emotion:"
NAMES = ["anger", "joy", "sadness"]
TEXTS = ["They lied to me", "We won the cup", "My cat died", "Best day ever", "He broke it again", "I miss her"]


def _labelled(labels=(0, 1, 2, 1, 0, 2), feature=None) -> datasets.Dataset:
    features = datasets.Features({"text": datasets.Value("string"), "label": feature or datasets.ClassLabel(names=NAMES),
                                  "valence": datasets.Value("float32")})
    return datasets.Dataset.from_dict({"text": TEXTS, "label": list(labels),
                                       "valence": [-0.8, 0.9, -0.9, 1.0, -0.5, -0.6]}, features=features)


def test_a_save_to_disk_folder_names_its_class_labels(tmp_path):
    folder = tmp_path / "saved"
    datasets.DatasetDict({"train": _labelled(), "test": _labelled((2, 2, 0, 1, 1, 0))}).save_to_disk(str(folder))
    spec = {"type": "huggingface", "path": str(folder), "split": "test", "target_columns": ["valence"]}
    table = prepare(spec, TEMPLATE, 0, None, "x")
    assert table.columns == [*PREPARED_COLUMNS, "valence"]
    assert table["label"].to_list() == ["sadness", "sadness", "anger", "joy", "joy", "anger"]
    assert table["label_id"].to_list() == [2, 2, 0, 1, 1, 0]  # the ClassLabel's own ids
    assert table["id"].to_list() == ["0", "1", "2", "3", "4", "5"]
    assert table["valence"].to_list() == pytest.approx([-0.8, 0.9, -0.9, 1.0, -0.5, -0.6])
    with pytest.raises(DataError, match=r"holds the splits \['train', 'test'\], not 'validation'"):
        prepare(spec | {"split": "validation"}, TEMPLATE, 0, None, "x")


def test_parquet_and_csv_files_with_plain_labels(tmp_path):
    folder = tmp_path / "files"
    folder.mkdir()
    frame = pl.DataFrame({"sentence": TEXTS, "emotion": ["anger", "joy", "sadness", "joy", "anger", "sadness"],
                          "key": [f"t{i}" for i in range(6)]})
    frame[:3].write_parquet(folder / "part-0.parquet")
    frame[3:].write_parquet(folder / "part-1.parquet")
    spec = {"type": "huggingface", "path": str(folder), "text_column": "sentence", "label_column": "emotion",
            "id_column": "key"}
    table = prepare(spec, TEMPLATE, 0, None, "x")
    assert table["id"].to_list() == [f"t{i}" for i in range(6)] and table["text"].to_list() == TEXTS
    assert table["label_id"].to_list() == [0, 1, 2, 1, 0, 2]
    frame.write_csv(tmp_path / "one.csv")
    assert prepare(spec | {"path": str(tmp_path / "one.csv")}, TEMPLATE, 0, None, "x")["label"].equals(table["label"])
    (folder / "README.md").write_text("other files in the folder are not data")
    assert prepare(spec, TEMPLATE, 0, None, "x").equals(table)
    frame.write_csv(folder / "extra.csv")
    with pytest.raises(DataError, match=r"parquet, arrow, csv or json files of one kind \(found \['.csv', "
                                        r"'.parquet', '.parquet'\]; other files are ignored\)"):
        prepare(spec, TEMPLATE, 0, None, "x")


def test_multi_label_and_unlabelled_rows_are_refused(tmp_path):
    multi = datasets.Dataset.from_dict({"text": TEXTS[:2], "labels": [[0, 1], [2]]}, features=datasets.Features(
        {"text": datasets.Value("string"), "labels": datasets.Sequence(datasets.ClassLabel(names=NAMES))}))
    multi.save_to_disk(str(tmp_path / "multi"))
    with pytest.raises(DataError, match=r"label column 'labels' holds lists \(a multi-label dataset\)"):
        prepare({"type": "huggingface", "path": str(tmp_path / "multi"), "label_column": "labels"}, TEMPLATE, 0,
                None, "x")
    _labelled((0, 1, -1, 1, 0, 2)).save_to_disk(str(tmp_path / "unlabelled"))
    with pytest.raises(DataError, match=r"label ids \[-1\] have no name in the ClassLabel feature"):
        prepare({"type": "huggingface", "path": str(tmp_path / "unlabelled")}, TEMPLATE, 0, None, "x")


def test_the_hub_path_names_the_id_and_the_fix_offline(monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match=r"cannot load the Hub dataset 'google-research-datasets/go_emotions' \(name "
                                        r"'simplified', split 'train', revision None\).*point `path` at a local copy"):
        prepare({"type": "huggingface", "id": "google-research-datasets/go_emotions", "name": "simplified",
                 "label_column": None, "target_columns": []}, TEMPLATE, 0, None, "x")


def test_id_or_path_exactly_one(tmp_path):
    base = {"models": {"m": {"source": "local", "path": str(tmp_path)}}}
    with pytest.raises(ConfigError, match=r"read from the Hub \(`id`\) or from a local copy \(`path`\): set exactly one"):
        validate_config(base | {"datasets": {"d": {"type": "huggingface"}}})
    with pytest.raises(ConfigError, match=r"'datasets.d.path': '.*nowhere' does not exist"):
        validate_config(base | {"datasets": {"d": {"type": "huggingface", "path": str(tmp_path / "nowhere")}}})
    with pytest.raises(ConfigError, match=r"labels_path"):
        validate_config(base | {"datasets": {"d": {"type": "huggingface", "id": "x/y", "labels_path": "z"}}})


def test_the_workflow_prepares_a_local_huggingface_dataset(tiny_models, tmp_path):
    """A real Snakemake job: prepare_dataset on a save_to_disk folder."""
    from .conftest import job_counts, run_snakemake

    folder = tmp_path / "saved"
    _labelled().save_to_disk(str(folder))
    config = {"models": {"tiny": {"source": "local", "path": str(tiny_models["llama"]["left"])}},
              "datasets": {"hf": {"type": "huggingface", "path": str(folder)}}, "probe": {"cv_folds": 2}}
    result = run_snakemake(tmp_path / "run", config, "results/data/hf.parquet")
    assert result.returncode == 0, result.stderr[-2000:]
    table = pl.read_parquet(tmp_path / "run" / "results" / "data" / "hf.parquet")
    assert table["label"].to_list() == ["anger", "joy", "sadness", "joy", "anger", "sadness"]
    assert job_counts(result.stdout + result.stderr)["prepare_dataset"] == 1
