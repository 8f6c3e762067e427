"""Datasets that the Hugging Face `datasets` library reads (type: huggingface): a Hub id (with
`name`, `split`, `revision`; downloaded into the library's cache, so it needs internet or a filled
cache), or a local copy: a folder written by `save_to_disk`, or parquet, arrow, csv or json files
(one file, or a folder of them). Integer labels are named through the column's ClassLabel feature
when it has one."""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl

from ..errors import DataError
from .custom import natural_order, parse_targets, pick_column
from .sources import note_read

log = logging.getLogger(__name__)

# The builder of each kind of local data file.
BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".csv": "csv", ".json": "json", ".jsonl": "json"}


def plan(spec: dict) -> tuple[bool, tuple[str, ...]]:
    """(has class labels, regression target names), from the config alone."""
    return spec["label_column"] is not None, tuple(spec["target_columns"])


def _local(path: Path, split: str):
    """A local copy: a save_to_disk folder (its `split` where it holds several), else data files."""
    import datasets

    if path.is_dir() and any((path / name).is_file() for name in ("dataset_info.json", "dataset_dict.json")):
        for file in sorted(f for f in path.rglob("*") if f.is_file()):
            note_read(file)
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise DataError(f"{path} holds the splits {list(loaded)}, not {split!r}: set `split` to one of them.")
            loaded = loaded[split]
        return loaded
    files = [path] if path.is_file() else sorted(f for f in path.rglob("*") if f.suffix.lower() in BUILDERS)
    kinds = {BUILDERS.get(f.suffix.lower()) for f in files}
    if not files or None in kinds or len(kinds) > 1:
        raise DataError(f"{path}: a local dataset is a save_to_disk folder, or parquet, arrow, csv or json files of "
                        f"one kind (found {sorted(f.suffix for f in files) or 'none'}; other files are ignored).")
    for file in files:
        note_read(file)
    return datasets.load_dataset(kinds.pop(), data_files=[str(f) for f in files], split="train")


def _hub(spec: dict):
    import datasets

    try:
        return datasets.load_dataset(spec["id"], spec["name"], split=spec["split"], revision=spec["revision"])
    except (ConnectionError, OSError, ValueError, datasets.exceptions.DatasetNotFoundError) as exc:
        raise DataError(f"cannot load the Hub dataset {spec['id']!r} (name {spec['name']!r}, split {spec['split']!r}, "
                        f"revision {spec['revision']!r}): {exc}. Offline, fill the datasets cache first (and set "
                        "HF_HUB_OFFLINE=1), or point `path` at a local copy.") from exc


def _label_names(dataset, column: str) -> list[str] | None:
    """The names of a ClassLabel column's integer labels; None for a column of plain values."""
    import datasets

    feature = dataset.features.get(column)
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    if isinstance(feature, (datasets.Sequence, datasets.LargeList, list)):
        raise DataError(f"label column {column!r} holds lists (a multi-label dataset): pick a single-label "
                        "configuration (`name`) or column.")
    return None


def load_dataset(spec: dict, data_dir: str | None = None, download_dir: str | None = None) -> pl.DataFrame:
    """id, text, label (Enum; null when no label column), one Float64 column per target."""
    source = spec["path"] or spec["id"]
    dataset = _local(Path(spec["path"]), spec["split"]) if spec["path"] else _hub(spec)
    frame = pl.from_arrow(dataset.with_format("arrow")[:])
    columns = frame.columns

    def column(option):
        return pick_column(frame, spec[option], option, source)

    names = _label_names(dataset, column("label_column")) if spec["label_column"] is not None else None
    if names is not None:
        labels = frame[column("label_column")].cast(pl.Int64)
        if bad := labels.filter((labels < 0) | (labels >= len(names))).unique().to_list():
            raise DataError(f"{source}: label ids {bad[:5]} have no name in the ClassLabel feature "
                            f"{names} (-1 marks an unlabelled row): drop those rows from the split, or pick a labelled split.")
        label = labels.replace_strict(list(range(len(names))), names, return_dtype=pl.String)
    elif spec["label_column"] is not None:
        label = frame[column("label_column")].cast(pl.String)
    else:
        label = pl.Series("label", [None] * frame.height, dtype=pl.String)
    text = frame[column("text_column")]
    if text.dtype != pl.String:
        raise DataError(f"{source}: text column {spec['text_column']!r} holds {text.dtype}, not text; set "
                        f"`text_column` to one of {columns}.")
    ids = (frame[column("id_column")].cast(pl.String) if spec["id_column"] is not None
           else pl.Series(range(frame.height)).cast(pl.String))
    table = pl.DataFrame({"id": ids, "text": text, "label": label})
    strings = frame.select(pl.col(spec["target_columns"]).cast(pl.String)) if spec["target_columns"] else frame
    table = pl.concat([table, parse_targets(strings, {name: name for name in spec["target_columns"]}, source)],
                      how="horizontal")
    if spec["label_column"] is not None:
        order = tuple(names) if names is not None else natural_order(label.drop_nulls().unique().to_list())
        table = table.with_columns(pl.col("label").cast(pl.Enum(order)))
    log.info("read %d rows from %s", table.height, source)
    return table
