"""Fold scores -> metrics table and summary: positions kept, a (layer, position) fitted twice
refused, mixed dtypes refused, std computed over folds, and the summary's best layer, ties,
plateau and floor."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from emoprobe.aggregate import aggregate, summarise
from emoprobe.errors import EmoprobeError


def _fold_rows(layer, position, values, probe="logreg", metric="accuracy", dtype="float32", target="label",
               n_classes=4):
    return [{"model": "m", "dataset": "d", "target": target, "layer": layer, "site": "residual", "position": position,
             "probe": probe,
             "fold": fold, "metric": metric, "value": float(value), "pooled": float(np.mean(values)),
             "ci_low": float(min(values)), "ci_high": float(max(values)), "n_layers": 3, "n_classes": n_classes,
             "dtype": dtype, "n_rows": 100} for fold, value in enumerate(values)]


def _scores(path, positions, value, layer=1, dtype="float32"):
    rows = [row for position in positions for row in _fold_rows(layer, position, [value, value + 0.1], dtype=dtype)]
    pl.DataFrame(rows).write_parquet(path)
    return str(path)


def test_only_the_configured_positions_are_kept(tmp_path):
    """Positions are labels ("-1", "text_mean"), nearest the end first; a file of integer
    positions (written before pooled positions existed) reads the same."""
    labelled = aggregate([_scores(tmp_path / "a.parquet", ["-3", "-2", "-1", "text_mean", "text_last"], 0.5)],
                         positions=[-1, -3, "text_mean"])
    assert labelled["position"].to_list() == ["-1", "-3", "text_mean"]
    assert labelled["mean"].to_list() == pytest.approx([0.55] * 3) and set(labelled["n_folds"]) == {2}
    old = aggregate([_scores(tmp_path / "b.parquet", [-3, -2, -1], 0.5)], positions=[-1, -3])
    assert old.equals(labelled.filter(pl.col("position") != "text_mean"))


def test_a_pair_from_two_probe_files_is_refused(tmp_path):
    files = [_scores(tmp_path / "a.parquet", [-2, -1], 0.5), _scores(tmp_path / "b.parquet", [-1], 0.7)]
    with pytest.raises(EmoprobeError, match="more than one probe file"):
        aggregate(files)
    assert aggregate(files, positions=[-2])["mean"].to_list() == pytest.approx([0.55])


def test_mean_and_std_are_over_folds(tmp_path):
    values = [0.31, 0.35, 0.42, 0.28, 0.39]
    path = tmp_path / "a.parquet"
    pl.DataFrame(_fold_rows(2, -1, values)).write_parquet(path)
    (row,) = aggregate([str(path)]).iter_rows(named=True)
    assert row["mean"] == pytest.approx(np.mean(values))
    assert row["std"] == pytest.approx(np.std(values, ddof=1))  # the sample std over folds
    assert row["n_folds"] == 5 and row["dtype"] == "float32"
    assert (row["pooled"], row["ci_low"], row["ci_high"]) == (np.mean(values), 0.28, 0.42)  # carried over


def test_shards_of_two_dtypes_in_one_sweep_are_refused(tmp_path):
    files = [_scores(tmp_path / "a.parquet", [-1], 0.5, layer=1, dtype="float32"),
             _scores(tmp_path / "b.parquet", [-1], 0.5, layer=2, dtype="bfloat16")]
    with pytest.raises(EmoprobeError, match=r"mixes shards extracted in different dtypes \(bfloat16: layers \[2\]; "
                                            r"float32: layers \[1\]\); set `extraction.dtype`"):
        aggregate(files)


def _metrics(cells: dict[tuple[int, int], float], majority: float = 0.2, site: str = "residual") -> pl.DataFrame:
    """A metrics table with logreg accuracy `cells[(layer, position)]` and a majority row per cell."""
    rows = [{"model": "m", "dataset": "d", "target": "label", "layer": layer, "site": site, "position": str(position),
             "probe": probe, "metric": "accuracy", "mean": value, "std": 0.01 * layer,
             "ci_low": value - 0.02, "ci_high": value + 0.03, "n_folds": 5,
             "n_layers": 4, "n_classes": 5, "dtype": "float32"}
            for (layer, position), mean in cells.items()
            for probe, value in (("logreg", mean), ("majority", majority))]
    return pl.DataFrame(rows)


def test_summary_best_layer_plateau_floor_and_chance():
    cells = {(0, -1): 0.20, (1, -1): 0.45, (2, -1): 0.49, (3, -1): 0.50, (4, -1): 0.47,
             (0, -2): 0.20, (1, -2): 0.30, (2, -2): 0.40, (3, -2): 0.42, (4, -2): 0.41}
    (row,) = summarise(_metrics(cells), tolerance=0.02).iter_rows(named=True)
    assert (row["best_layer"], row["best_position"], row["score"]) == (3, "-1", 0.50)
    assert row["score_std"] == pytest.approx(0.03)  # the best cell's own std and CI
    assert (row["score_ci_low"], row["score_ci_high"]) == (pytest.approx(0.48), pytest.approx(0.53))
    assert row["first_layer_within_tolerance"] == 2  # 0.49 >= 0.50 - 0.02, 0.45 is not
    assert row["floor"] == 0.2 and row["chance"] == pytest.approx(1 / 5)
    assert row["candidates"] == 10  # the best of 10 CV means on the same folds


def test_summary_best_cell_is_over_every_site():
    """The best (layer, site, position): here the MLP output's layer 2; the plateau is read at that
    site and position."""
    residual = _metrics({(1, -1): 0.40, (2, -1): 0.45, (3, -1): 0.46})
    mlp = _metrics({(1, -1): 0.30, (2, -1): 0.52, (3, -1): 0.50}, site="mlp_out")
    (row,) = summarise(pl.concat([residual, mlp])).iter_rows(named=True)
    assert (row["best_layer"], row["best_site"], row["best_position"], row["score"]) == (2, "mlp_out", "-1", 0.52)
    assert row["first_layer_within_tolerance"] == 2 and row["candidates"] == 6


@pytest.mark.parametrize("order", [1, -1])
def test_summary_ties_go_to_the_earlier_layer_then_the_position_nearest_the_end(order):
    cells = {(3, -2): 0.5, (2, "text_mean"): 0.5, (2, -10): 0.5, (2, -3): 0.5, (2, -1): 0.5, (1, -1): 0.3,
             (4, -1): 0.5}
    cells = dict(list(cells.items())[::order])  # the input order must not matter
    (row,) = summarise(_metrics(cells)).iter_rows(named=True)
    assert (row["best_layer"], row["best_position"]) == (2, "-1")
    # then a fixed position before text_last, before text_mean
    pooled = {(2, "text_mean"): 0.5, (2, "text_last"): 0.5, (2, -4): 0.5}
    (row,) = summarise(_metrics(dict(list(pooled.items())[::order]))).iter_rows(named=True)
    assert row["best_position"] == "-4"
    (row,) = summarise(_metrics({(2, "text_mean"): 0.5, (2, "text_last"): 0.5})).iter_rows(named=True)
    assert row["best_position"] == "text_last"
