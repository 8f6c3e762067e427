"""Prepared tables: results/data/{dataset}.parquet with id, text, prompt, label, label_id,
then `split` where the source has one, then one Float64 column per regression target.

Datasets without classes (EmoBank, GoEmotions `raw`) have null label and label_id.
"""

from __future__ import annotations

import copy
import logging

import polars as pl

from ..config import check_schema, fill_defaults, load_schema
from ..errors import DataError
from . import crowd_envent, custom, emobank, empathetic_dialogues, goemotions, huggingface, isear

log = logging.getLogger(__name__)

# type -> loader module, each with plan(spec) -> (has labels, target names) and
# load_dataset(spec, data_dir, download_dir) -> a frame of id, text, label (an Enum in
# label-id order, or null), [split], targets (Float64). Their options, allowed values and
# defaults are those of the config schema's `datasets` entries: specs reach them resolved.
LOADERS = {
    "crowd_envent": crowd_envent,
    "goemotions": goemotions,
    "isear": isear,
    "empathetic_dialogues": empathetic_dialogues,
    "emobank": emobank,
    "custom": custom,
    "huggingface": huggingface,
}

PREPARED_COLUMNS = ("id", "text", "prompt", "label", "label_id")


def resolve_spec(spec: dict) -> dict:
    """A `datasets.<name>` entry checked against the config schema, with its type's defaults filled in
    (ConfigError naming the option otherwise)."""
    check_schema(spec, load_schema()["properties"]["datasets"]["additionalProperties"], "datasets.<name>")
    # fill_defaults takes a whole config: the spec goes in with a placeholder model.
    config = {"models": {"m": {"source": "local", "path": "."}}, "datasets": {"d": copy.deepcopy(spec)}}
    fill_defaults(config)
    return config["datasets"]["d"]


def probe_plan(spec: dict) -> dict:
    """What a dataset can be probed for, from its resolved spec alone: classes, and target names."""
    has_labels, targets = LOADERS[spec["type"]].plan(spec)
    if spec["max_per_class"] and not has_labels:
        raise DataError(f"max_per_class needs class labels, and this {spec['type']} dataset has none; "
                        "remove max_per_class.")
    return {"classification": has_labels, "targets": list(targets)}


def target_columns(table: pl.DataFrame) -> list[str]:
    """The regression targets of a prepared table: the columns after the contract and `split`."""
    return [column for column in table.columns if column not in (*PREPARED_COLUMNS, "split")]


def row_checks(has_labels: bool, targets: tuple[str, ...] = ()) -> list[tuple[str, pl.Expr, str]]:
    """(what is wrong, mask of the offending rows, how to fix it) for each kind of unusable row."""
    checks = [
        ("texts are empty or whitespace-only",
         pl.col("text").is_null() | (pl.col("text").str.strip_chars() == ""), "fill them in the source file"),
        ("rows have no id", pl.col("id").is_null() | (pl.col("id").cast(pl.String).str.strip_chars() == ""),
         "fill in the id column"),
        ("rows repeat the id of an earlier row", ~pl.col("id").is_first_distinct(),
         "make the ids unique in the source file"),
    ]
    if has_labels:
        checks.append(("texts have no label", pl.col("label").is_null(), "label them in the source file"))
    checks += [(f"rows have no value (null, NaN or inf) for target {target!r}",
                pl.col(target).is_null() | ~pl.col(target).is_finite(), "fill them in the source file")
               for target in targets]
    return checks


def class_size_checks(frame: pl.DataFrame, cv_folds: int | None, spec: dict) -> list:
    """Row checks for classes a probe cannot learn and test: too small for the CV, or unseen in training."""
    if spec["official_split"]:
        seen = set(frame.filter(pl.col("split") == "train")["label"].drop_nulls().cast(pl.String).to_list())
        unseen = sorted(set(frame["label"].drop_nulls().cast(pl.String).to_list()) - seen)
        return [(f"texts carry labels absent from the official training split ({unseen})",
                 pl.col("label").cast(pl.String).is_in(unseen), "probe with cross-validation (official_split: false)")]
    if cv_folds is None:
        return []
    # Distinct texts, not rows: the folds keep every copy of a text together (emoprobe.folds).
    counts = {str(label): n for label, n in frame.group_by("label").agg(pl.col("text").n_unique()).iter_rows()
              if label is not None}
    rare = dict(sorted((label, n) for label, n in counts.items() if n < cv_folds))
    slicing = " or ".join(option for option in ("max_per_class", "max_rows") if spec[option])
    return [(f"texts belong to classes with fewer texts than probe.cv_folds={cv_folds} ({rare})",
             pl.col("label").cast(pl.String).is_in(list(rare)),
             "lower probe.cv_folds" + (f" or raise {slicing}" if slicing else ""))]


def apply_row_checks(frame: pl.DataFrame, checks: list, bad_rows: str = "error") -> pl.DataFrame:
    """Refuse (bad_rows: error) or drop with a logged count (bad_rows: drop) each kind of bad row."""
    for what, mask, fix in checks:
        bad = frame.filter(mask)
        if not bad.height:
            continue
        examples = bad["id"].head(5).to_list()
        if bad_rows == "error":
            raise DataError(f"{bad.height} {what}, e.g. ids {examples}; {fix}, or set the dataset's "
                            "`bad_rows: drop` to drop them.")
        log.warning("dropped %d of %d rows: %s, e.g. ids %s", bad.height, frame.height, what, examples)
        frame = frame.filter(~mask)
    return frame


def drop_duplicate_texts(frame: pl.DataFrame, targets: tuple[str, ...] = ()) -> pl.DataFrame:
    """One copy of each repeated text whose copies agree on label and targets; none where they disagree."""
    conflicting = pl.struct("label", *targets).n_unique().over("text") > 1
    repeated = pl.col("text").is_duplicated()
    counts = frame.select(repeated.sum().alias("rows"), (repeated & conflicting).sum().alias("conflicting"))
    kept = frame.filter(pl.col("text").is_first_distinct() & ~conflicting)
    if counts["rows"][0]:
        log.warning("duplicate_texts: drop: %d rows share their text with another row; dropped %d of them: all "
                    "%d copies of texts whose copies disagree on label or targets, and the extra copies of the rest",
                    counts["rows"][0], frame.height - kept.height, counts["conflicting"][0])
    return kept


def check_official_split(frame: pl.DataFrame, bad_rows: str) -> pl.DataFrame:
    """The frame must carry train and test rows in `split`; rows without a split are bad rows."""
    frame = apply_row_checks(frame, [("rows have no split", pl.col("split").is_null(),
                                      "fill in the split column")], bad_rows)
    missing = {"train", "test"} - set(frame["split"].to_list())
    if missing:
        raise DataError(f"official_split needs train and test rows; there are no {sorted(missing)} rows.")
    return frame


def subsample_per_class(frame: pl.DataFrame, max_per_class: int, seed: int) -> pl.DataFrame:
    """Keep at most `max_per_class` rows of each label, chosen with `seed`; keep file order."""
    return (
        frame.with_row_index("_row")
        .sample(fraction=1.0, shuffle=True, seed=seed)
        .filter(pl.int_range(pl.len()).over("label") < max_per_class)
        .sort("_row")
        .drop("_row")
    )


def subsample_rows(frame: pl.DataFrame, max_rows: int, seed: int) -> pl.DataFrame:
    """A seeded random sample of `max_rows` rows (all, if fewer), in file order."""
    if frame.height <= max_rows:
        return frame
    return frame.with_row_index("_row").sample(n=max_rows, seed=seed).sort("_row").drop("_row")


def _classes(frame: pl.DataFrame) -> list[str]:
    return sorted(frame["label"].drop_nulls().cast(pl.String).unique().to_list())


def check_classes_left(left: list[str], source_classes: list[str], removed_by: list[str]) -> None:
    """A classification probe needs two classes: name the one left and the options that removed the others."""
    if len(left) > 1:
        return
    what = f"only one class, {left[0]!r}," if left else "no class"
    if removed_by:
        options = " and ".join(dict.fromkeys(removed_by))
        named = " (with bad_rows: error the rows are named)" if "bad_rows: drop" in removed_by else ""
        raise DataError(f"{what} is left of the source's {len(source_classes)} ({', '.join(source_classes)}): "
                        f"{options} removed the others, and a classification probe needs two; relax {options}"
                        f"{named}.")
    raise DataError(f"there is {what} in the source, and a classification probe needs two; label more classes "
                    "(custom: or set `label_column: null` to probe only `target_columns`).")


def build_prepared_table(frame: pl.DataFrame, labels: tuple[str, ...], template: str,
                         targets: tuple[str, ...] = ()) -> pl.DataFrame:
    """Add prompt and label_id columns and check the table is fit to probe (labels=() for no classes)."""
    frame = apply_row_checks(frame, row_checks(bool(labels), targets), "error")
    label = pl.col("label").cast(pl.String)
    if labels:
        unknown = sorted(set(frame.select(label)["label"].to_list()) - set(labels))
        if unknown:
            raise DataError(f"labels {unknown[:5]} are not in the label order {list(labels)}.")
    label_id = (label.replace_strict({name: i for i, name in enumerate(labels)}, return_dtype=pl.Int64)
                if labels else pl.lit(None, dtype=pl.Int64))
    return frame.select(
        pl.col("id").cast(pl.String),
        "text",
        pl.col("text").map_elements(lambda t: template.format(text=t), return_dtype=pl.String).alias("prompt"),
        label.alias("label") if labels else pl.lit(None, dtype=pl.String).alias("label"),
        label_id.alias("label_id"),
        *(["split"] if "split" in frame.columns else []),
        *(pl.col(target).cast(pl.Float64) for target in targets),
    )


def prepare(dataset_spec: dict, template: str, seed: int, data_dir: str | None,
            download_dir: str, cv_folds: int | None = None, record: dict | None = None) -> pl.DataFrame:
    """Fetch, verify, parse, clean and (optionally) subsample one dataset into a prepared table.

    `record`, when given, receives the rows read, the rows each step dropped (by the option that
    dropped them) and the rows kept: what the methods section reports.

    Bad rows are refused or dropped as the spec's `bad_rows` says; `cv_folds` (probe.cv_folds)
    adds the check for classes with fewer texts than folds (None skips it). A dataset with classes
    must keep two of them.
    """
    spec = resolve_spec(dataset_spec)
    plan = probe_plan(spec)
    has_labels, targets = plan["classification"], tuple(plan["targets"])
    frame = LOADERS[spec["type"]].load_dataset(spec, data_dir, download_dir)
    labels = tuple(frame["label"].dtype.categories) if has_labels else ()
    # (the option under which a step drops rows, the step), in order.
    steps = [("bad_rows: drop", lambda f: apply_row_checks(f, row_checks(has_labels, targets), spec["bad_rows"]))]
    if spec["duplicate_texts"] == "drop":
        steps.append(("duplicate_texts: drop", lambda f: drop_duplicate_texts(f, targets)))
    if spec["official_split"]:
        steps.append(("bad_rows: drop", lambda f: check_official_split(f, spec["bad_rows"])))
    if spec["max_per_class"]:
        steps.append((f"max_per_class: {spec['max_per_class']}",
                      lambda f: subsample_per_class(f, spec["max_per_class"], seed)))
    if spec["max_rows"]:
        steps.append((f"max_rows: {spec['max_rows']}", lambda f: subsample_rows(f, spec["max_rows"], seed)))
    if has_labels:
        steps.append(("bad_rows: drop",
                      lambda f: apply_row_checks(f, class_size_checks(f, cv_folds, spec), spec["bad_rows"])))
    source_classes = left = _classes(frame)
    removed_by = []
    dropped = []
    rows_read = frame.height
    for option, step in steps:
        rows = frame.height
        frame = step(frame)
        if frame.height < rows:
            dropped.append({"option": option, "rows": rows - frame.height})
        before, left = left, _classes(frame)
        if len(left) < len(before):
            removed_by.append(option)
    if has_labels:
        check_classes_left(left, source_classes, removed_by)
    if record is not None:
        record.update(rows_read=rows_read, dropped=dropped, rows_kept=frame.height)
    return build_prepared_table(frame, labels, template, targets)


