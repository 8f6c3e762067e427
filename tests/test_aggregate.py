"""Fold scores -> metrics table: positions kept, and a (layer, position) fitted twice refused."""

from __future__ import annotations

import polars as pl
import pytest

from emoprobe.aggregate import aggregate
from emoprobe.errors import EmoprobeError


def _scores(path, positions, value):
    rows = [{"model": "m", "dataset": "d", "target": "label", "layer": 1, "position": position, "probe": "logreg",
             "fold": fold, "metric": "accuracy", "value": value + fold / 10, "n_layers": 3, "n_classes": 4}
            for position in positions for fold in range(2)]
    pl.DataFrame(rows).write_parquet(path)
    return str(path)


def test_only_the_configured_positions_are_kept(tmp_path):
    metrics = aggregate([_scores(tmp_path / "a.parquet", [-3, -2, -1], 0.5)], positions=[-1, -3])
    assert metrics["position"].to_list() == [-3, -1]
    assert metrics["mean"].to_list() == pytest.approx([0.55, 0.55]) and set(metrics["n_folds"]) == {2}


def test_a_pair_from_two_probe_files_is_refused(tmp_path):
    files = [_scores(tmp_path / "a.parquet", [-2, -1], 0.5), _scores(tmp_path / "b.parquet", [-1], 0.7)]
    with pytest.raises(EmoprobeError, match="more than one probe file"):
        aggregate(files)
    assert aggregate(files, positions=[-2])["mean"].to_list() == pytest.approx([0.55])
