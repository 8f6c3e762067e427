"""Prepared tables: results/data/{dataset}.parquet with id, text, prompt, label, label_id."""

from __future__ import annotations

import polars as pl

from ..errors import DataError
from . import crowd_envent
from .sources import fetch

# type -> (raw file, loader, label order)
LOADERS = {
    "crowd_envent": (crowd_envent.GENERATION_FILE, crowd_envent.load, crowd_envent.LABELS),
}

PREPARED_COLUMNS = ("id", "text", "prompt", "label", "label_id")


def subsample_per_class(frame: pl.DataFrame, max_per_class: int, seed: int) -> pl.DataFrame:
    """Keep at most `max_per_class` rows of each label, chosen with `seed`; keep file order."""
    return (
        frame.with_row_index("_row")
        .sample(fraction=1.0, shuffle=True, seed=seed)
        .filter(pl.int_range(pl.len()).over("label") < max_per_class)
        .sort("_row")
        .drop("_row")
    )


def build_prepared_table(frame: pl.DataFrame, labels: tuple[str, ...], template: str) -> pl.DataFrame:
    """Add prompt and label_id columns and check the table is fit to probe."""
    if frame["id"].is_duplicated().any():
        dupes = frame.filter(pl.col("id").is_duplicated())["id"].unique().to_list()[:5]
        raise DataError(f"duplicate text ids, e.g. {dupes}; ids must be unique.")
    empty = frame.filter(pl.col("text").is_null() | (pl.col("text").str.strip_chars().str.len_chars() == 0))
    if empty.height:
        raise DataError(f"{empty.height} empty or missing texts, e.g. ids {empty['id'].to_list()[:5]}.")
    unlabelled = frame.filter(pl.col("label").is_null())
    if unlabelled.height:
        raise DataError(f"{unlabelled.height} texts have no label, e.g. ids {unlabelled['id'].to_list()[:5]}.")
    label_ids = {label: i for i, label in enumerate(labels)}
    return frame.select(
        pl.col("id").cast(pl.String),
        "text",
        pl.col("text").map_elements(lambda t: template.format(text=t), return_dtype=pl.String).alias("prompt"),
        "label",
        pl.col("label").replace_strict(label_ids, return_dtype=pl.Int64).alias("label_id"),
    )


def prepare(dataset_spec: dict, template: str, seed: int, data_dir: str | None,
            download_dir: str) -> pl.DataFrame:
    """Fetch, verify, parse and (optionally) subsample one dataset into a prepared table."""
    raw_file, loader, labels = LOADERS[dataset_spec["type"]]
    frame = loader(fetch(raw_file, data_dir, download_dir))
    if dataset_spec.get("max_per_class"):
        frame = subsample_per_class(frame, dataset_spec["max_per_class"], seed)
    return build_prepared_table(frame, labels, template)
