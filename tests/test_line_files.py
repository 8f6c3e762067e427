"""Custom datasets as parquet files and as parallel line files (texts, labels, label names)."""

from __future__ import annotations

import polars as pl
import pytest

from emoprobe.config import validate_config
from emoprobe.data.prepare import PREPARED_COLUMNS, prepare
from emoprobe.errors import ConfigError, DataError

TEMPLATE = "Text: {text} Emotion:"


def _write(path, lines, end="\n"):
    path.write_text(end.join(lines) + end, encoding="utf-8")
    return str(path)


def _spec(tmp_path, texts, labels=None, names=None, **options):
    spec = {"type": "custom", "format": "lines", "path": _write(tmp_path / "texts.txt", texts)}
    if labels is not None:
        spec["labels_path"] = _write(tmp_path / "labels.txt", labels)
    if names is not None:
        spec["label_names_path"] = _write(tmp_path / "names.txt", names)
    return spec | options


def test_parallel_lines_with_label_names(tmp_path):
    spec = _spec(tmp_path, ["I won the match", "My dog died", "Rain, again", "We got the flat"],
                 ["1", "0", "0", "1"], ["sadness", "joy"])
    table = prepare(spec, TEMPLATE, 0, None, "x")
    assert table.columns == list(PREPARED_COLUMNS)
    assert table["id"].to_list() == ["1", "2", "3", "4"]  # ids are line numbers
    assert table["label"].to_list() == ["joy", "sadness", "sadness", "joy"]
    assert table["label_id"].to_list() == [0, 1, 1, 0]  # label ids sort by name
    assert table["prompt"][2] == "Text: Rain, again Emotion:"


def test_parallel_lines_with_label_words_and_crlf(tmp_path):
    spec = {"type": "custom", "format": "lines", "path": _write(tmp_path / "t.txt", ["a b", "c d", "e f"], "\r\n"),
            "labels_path": _write(tmp_path / "l.txt", ["fear", "joy", "fear"], "\r\n")}
    table = prepare(spec, TEMPLATE, 0, None, "x")
    assert table["text"].to_list() == ["a b", "c d", "e f"] and table["label"].to_list() == ["fear", "joy", "fear"]


def test_unequal_line_counts_name_the_line(tmp_path):
    spec = _spec(tmp_path, ["one", "two", "three"], ["joy", "fear"])
    with pytest.raises(DataError, match=r"texts.txt has 3 lines and .*labels.txt 2: .*line 3 of .*texts.txt \(of 3\) "
                                        r"has no partner"):
        prepare(spec, TEMPLATE, 0, None, "x")


def test_an_empty_text_line_is_a_bad_row_named_by_its_line(tmp_path):
    spec = _spec(tmp_path, ["one", "", "three", "four"], ["joy", "fear", "joy", "fear"])
    with pytest.raises(DataError, match=r"1 texts are empty or whitespace-only, e.g. ids \['2'\]; .*bad_rows: drop"):
        prepare(spec, TEMPLATE, 0, None, "x")
    table = prepare(spec | {"bad_rows": "drop"}, TEMPLATE, 0, None, "x")
    assert table["id"].to_list() == ["1", "3", "4"]


def test_a_label_id_without_a_name_names_the_line(tmp_path):
    spec = _spec(tmp_path, ["one", "two", "three"], ["0", "2", "1"], ["joy", "fear"])
    with pytest.raises(DataError, match=r"labels.txt, line 2: label id '2' has no name in .*names.txt \(2 lines: "
                                        r"line i \+ 1 names label id i, ids 0-1\)"):
        prepare(spec, TEMPLATE, 0, None, "x")
    with pytest.raises(DataError, match=r"line 1: label id 'joy' has no name"):
        prepare(_spec(tmp_path, ["one", "two"], ["joy", "0"], ["joy"]), TEMPLATE, 0, None, "x")


def test_line_file_options_are_checked_before_anything_runs(tmp_path):
    base = {"models": {"m": {"source": "local", "path": str(tmp_path)}}}
    texts = _write(tmp_path / "texts.txt", ["a", "b"])
    with pytest.raises(ConfigError, match=r"'datasets.d.labels_path' is for parallel line files: set `format: lines`"):
        validate_config(base | {"datasets": {"d": {"type": "custom", "path": texts, "label_column": "x",
                                                   "labels_path": texts}}})
    with pytest.raises(ConfigError, match=r"'datasets.d.labels_path': '.*nowhere.txt' does not exist"):
        validate_config(base | {"datasets": {"d": {"type": "custom", "format": "lines", "path": texts,
                                                   "labels_path": str(tmp_path / "nowhere.txt")}}})
    with pytest.raises(ConfigError, match=r"nothing to probe.*with `format: lines`, `labels_path`"):
        validate_config(base | {"datasets": {"d": {"type": "custom", "format": "lines", "path": texts}}})


def test_parquet_file_with_integer_labels_and_float_targets(tmp_path):
    path = tmp_path / "mine.parquet"
    pl.DataFrame({"sentence": ["I won", "It broke", "Fine day", "Lost again"], "cls": [1, 0, 1, 0],
                  "valence": [0.9, -0.7, 0.4, None]}).write_parquet(path)
    spec = {"type": "custom", "path": str(path), "text_column": "sentence", "label_column": "cls",
            "target_columns": ["valence"], "bad_rows": "drop"}
    table = prepare(spec, TEMPLATE, 0, None, "x")
    assert table["text"].to_list() == ["I won", "It broke", "Fine day"]
    assert table["label"].to_list() == ["1", "0", "1"] and table["valence"].to_list() == [0.9, -0.7, 0.4]
    (tmp_path / "broken.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"broken.parquet is not a readable parquet file"):
        prepare({**spec, "path": str(tmp_path / "broken.parquet")}, TEMPLATE, 0, None, "x")
    pl.DataFrame({"text": ["a"], "cls": [[1, 2]]}).write_parquet(tmp_path / "nested.parquet")
    with pytest.raises(DataError, match=r"columns \['cls'\] hold lists or structs"):
        prepare({"type": "custom", "path": str(tmp_path / "nested.parquet"), "label_column": "cls"}, TEMPLATE, 0,
                None, "x")
