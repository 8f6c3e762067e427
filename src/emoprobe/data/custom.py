"""Your own data (type: custom): a CSV, TSV, JSONL or parquet file with configurable columns, or
parallel line files (`format: lines`: a file of texts and a file of labels, line i with line i,
optionally a file of label names, line i naming label id i). The options are the config schema's:
specs reach this module resolved.

Also holds the file-reading helpers the other loaders share (decoding, delimited text,
column lookup, numeric targets, split names), so every dataset fails the same way.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from pathlib import Path

import polars as pl

from ..errors import DataError
from .sources import note_read, sha256_of

log = logging.getLogger(__name__)

FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
# What a parallel-line dataset's columns are called (format: lines).
LINE_COLUMNS = {"id_column": "line", "text_column": "text", "label_column": "label"}
SPLIT_NAMES = {"train": "train", "dev": "dev", "valid": "dev", "validation": "dev", "val": "dev",
               "test": "test"}
RESERVED_COLUMNS = ("id", "text", "prompt", "label", "label_id", "split")


def decode_file(path: str | Path, encoding: str = "utf-8") -> str:
    """The file's text; a wrong encoding is named with the offending byte and the fix."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}.") from exc
    note_read(path, content=raw)
    codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        return raw.decode(codec)
    except LookupError as exc:
        raise DataError(f"{path}: unknown encoding {encoding!r}; use a Python codec name such as "
                        "utf-8, cp1252 or latin-1.") from exc
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path} is not valid {encoding}: byte {raw[exc.start:exc.start + 1]!r} at offset {exc.start} "
            f"({exc.reason}). Set the dataset's `encoding` to the file's real encoding (e.g. cp1252 or latin-1)."
        ) from exc


def read_delimited(text: str, source: str, separator: str = ",", quote_char: str | None = '"',
                   header: bool = True) -> pl.DataFrame:
    """Parse delimited text into all-String columns (named by header, else 0..n-1); blank lines skipped."""
    quoting = csv.QUOTE_MINIMAL if quote_char else csv.QUOTE_NONE
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=separator, quotechar=quote_char or None,
                        quoting=quoting, doublequote=True, strict=False)
    rows, names = [], None
    try:
        for fields in reader:
            if not fields or fields == [""]:
                continue
            if names is None:
                names = fields if header else [str(i) for i in range(len(fields))]
                if header:
                    continue
            if len(fields) != len(names):
                raise DataError(
                    f"{source}, line {reader.line_num}: {len(fields)} fields where the "
                    f"{'header' if header else 'first row'} has {len(names)}. Check `separator` "
                    f"(now {separator!r}) and `quote_char` (now {quote_char!r}), or quote texts that "
                    "contain the separator."
                )
            rows.append(fields)
    except csv.Error as exc:
        raise DataError(f"{source}, line {reader.line_num}: {exc}; check `quote_char` and `separator`.") from exc
    if names is None:
        raise DataError(f"{source} is empty.")
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise DataError(f"{source}: the header names columns {duplicated} more than once; rename them.")
    return pl.DataFrame({name: [row[i] for row in rows] for i, name in enumerate(names)},
                        schema={name: pl.String for name in names})


def _json_cell(value):
    """A JSON value as text: strings as they are, null as null, a whole number without a fraction
    (1 and 1.0 -> "1", so they are one label), anything else as JSON."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return json.dumps(value)


def read_jsonl(text: str, source: str) -> pl.DataFrame:
    """One JSON object per line -> all-String columns (JSON null stays null); blank lines skipped."""
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{source}, line {number}: not valid JSON ({exc.msg}); each line must be one "
                            "JSON object.") from exc
        if not isinstance(record, dict):
            raise DataError(f"{source}, line {number}: a JSON {type(record).__name__}, not an object.")
        nested = [key for key, value in record.items() if isinstance(value, (dict, list))]
        if nested:
            raise DataError(f"{source}, line {number}: fields {nested} hold nested JSON; use plain values.")
        records.append({key: _json_cell(value) for key, value in record.items()})
    if not records:
        raise DataError(f"{source} holds no JSON records.")
    names = list(dict.fromkeys(key for record in records for key in record))
    return pl.DataFrame({name: [record.get(name) for record in records] for name in names},
                        schema={name: pl.String for name in names})


def pick_column(frame: pl.DataFrame, key: str | int, option: str, source: str, header: bool = True) -> str:
    """The frame's column name for a config key that is a column name or a 0-based position."""
    if isinstance(key, int):
        if not 0 <= key < frame.width:
            raise DataError(f"`{option}: {key}` is out of range: {source} has {frame.width} columns "
                            f"(positions 0..{frame.width - 1}).")
        return frame.columns[key]
    if not header:
        raise DataError(f"`{option}: {key!r}` names a column, but `header: false` means {source} has no "
                        "column names; give its 0-based position instead.")
    if key not in frame.columns:
        raise DataError(f"`{option}: {key!r}` is not a column of {source}; its columns are {frame.columns}.")
    return key


def as_missing(column: str, missing_values: list[str]) -> pl.Expr:
    """A String column stripped, with missing-value markers (and whitespace-only) as null."""
    stripped = pl.col(column).str.strip_chars()
    return (pl.when(stripped.is_in(list(missing_values)) | (stripped == "")).then(None).otherwise(stripped)
            .alias(column))


def parse_targets(frame: pl.DataFrame, names: dict[str, str], source: str,
                  missing_values: list[str] = ("",)) -> pl.DataFrame:
    """Cast String target columns (source name -> target name) to Float64; name unparsable values."""
    out = {}
    for column, target in names.items():
        values = frame.select(as_missing(column, list(missing_values)))[column]
        parsed = values.cast(pl.Float64, strict=False)
        bad = frame.filter(values.is_not_null() & parsed.is_null())
        if bad.height:
            examples = bad[column].head(3).to_list()
            raise DataError(f"{source}: target column {column!r} has {bad.height} values that are not numbers, "
                            f"e.g. {examples}; fix them, or list them in `missing_values`.")
        out[target] = parsed
    return pl.DataFrame(out)


def normalise_split(split: pl.Series, source: str) -> pl.Series:
    """Map split names to train / dev / test (valid, validation and val mean dev)."""
    lowered = split.str.strip_chars().str.to_lowercase()
    unknown = sorted(set(lowered.drop_nulls().unique().to_list()) - set(SPLIT_NAMES))
    if unknown:
        raise DataError(f"{source}: split values {unknown[:5]} are not train, dev (or valid) or test; "
                        "rename them in the file.")
    return lowered.replace_strict(SPLIT_NAMES, default=None, return_dtype=pl.String).alias("split")


def natural_order(labels: list[str]) -> tuple[str, ...]:
    """Sorted labels; numerically when every label is an integer (so '10' follows '9')."""
    if all(re.fullmatch(r"[+-]?\d+", label) for label in labels):
        return tuple(sorted(labels, key=int))
    return tuple(sorted(labels))


def _target_names(spec: dict) -> dict:
    """Target column key (name or position) -> target name in the prepared table."""
    keys = spec["target_columns"]
    names = {key: key if isinstance(key, str) else f"column_{key}" for key in keys}
    clashes = sorted(set(names.values()) & set(RESERVED_COLUMNS))
    if clashes:
        raise DataError(f"target columns {clashes} clash with the prepared table's own columns "
                        f"{list(RESERVED_COLUMNS)}; rename them in the file.")
    if len(set(names.values())) != len(keys):
        raise DataError(f"`target_columns` {keys} name the same target twice (position N is named column_N).")
    return names


def plan(spec: dict) -> tuple[bool, tuple[str, ...]]:
    """(has class labels, regression target names), from the config alone."""
    if spec["format"] == "lines":
        return spec["labels_path"] is not None, ()
    return spec["label_column"] is not None, tuple(_target_names(spec).values())


def _lines(path: str | Path, encoding: str) -> list[str]:
    """The file's lines (\n or \r\n ends; a final line end adds no empty line)."""
    text = decode_file(path, encoding)
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    return lines[:-1] if lines and lines[-1] == "" else lines


def read_parallel_lines(spec: dict) -> pl.DataFrame:
    """line (1-based), text, label (the labels file's line, or its label id's name): String columns."""
    texts = _lines(spec["path"], spec["encoding"])
    frame = pl.DataFrame({"line": [str(i + 1) for i in range(len(texts))], "text": texts}, schema=dict.fromkeys(
        ("line", "text"), pl.String))
    if spec["labels_path"] is None:
        return frame
    labels = _lines(spec["labels_path"], spec["encoding"])
    if len(labels) != len(texts):
        longer, count = (spec["path"], len(texts)) if len(texts) > len(labels) else (spec["labels_path"], len(labels))
        raise DataError(f"{spec['path']} has {len(texts)} lines and {spec['labels_path']} {len(labels)}: line i of one "
                        f"is line i of the other, so line {min(len(texts), len(labels)) + 1} of {longer} (of {count}) "
                        "has no partner. Make the two files line up.")
    labels = [label.strip() for label in labels]
    if spec["label_names_path"] is not None:
        names = [name.strip() for name in _lines(spec["label_names_path"], spec["encoding"])]
        missing = set(spec["missing_values"])
        for number, label in enumerate(labels, 1):
            if label in missing:
                continue
            if not re.fullmatch(r"\d+", label) or int(label) >= len(names) or not names[int(label)]:
                raise DataError(f"{spec['labels_path']}, line {number}: label id {label!r} has no name in "
                                f"{spec['label_names_path']} ({len(names)} lines: line i + 1 names label id i, "
                                f"ids 0-{len(names) - 1}). Fix the id or add its name.")
        labels = [label if label in missing else names[int(label)] for label in labels]
    return frame.with_columns(label=pl.Series(labels, dtype=pl.String))


def read_parquet_file(path: Path) -> pl.DataFrame:
    """A parquet file's columns as String columns (a number's text, as a csv cell would hold it)."""
    try:
        frame = pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise DataError(f"{path} is not a readable parquet file ({exc}); write it with pandas, polars or pyarrow, "
                        "or set `format` to the file's real format.") from exc
    note_read(path)
    if nested := [name for name, dtype in frame.schema.items() if dtype.is_nested()]:
        raise DataError(f"{path}: columns {nested} hold lists or structs; a custom dataset reads one text, label or "
                        "number per cell.")
    return frame.with_columns(pl.all().cast(pl.String))


def _file_format(path: Path, spec: dict) -> str:
    fmt = spec["format"] or FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"cannot tell the format of {path} from its extension; set `format` to csv, tsv, jsonl, "
                        "parquet or lines.")
    return fmt


def read_user_file(spec: dict) -> tuple[pl.DataFrame, str]:
    """The custom file as all-String columns, and how to name it in messages (validate_config has
    checked that `path` exists)."""
    path = Path(spec["path"])
    expected = spec["sha256"]
    actual = sha256_of(path) if expected else expected
    if actual != expected:
        raise DataError(f"sha256 mismatch for {path}: expected {expected}, got {actual}; the file "
                        "changed, so update `sha256` if the change is intended.")
    fmt = _file_format(path, spec)
    if fmt == "parquet":
        return read_parquet_file(path), str(path)
    if fmt == "lines":
        return read_parallel_lines(spec), str(path)
    text = decode_file(path, spec["encoding"])
    if fmt == "jsonl":
        return read_jsonl(text, str(path)), str(path)
    separator = spec["separator"] or ("\t" if fmt == "tsv" else ",")
    return read_delimited(text, str(path), separator, spec["quote_char"], spec["header"]), str(path)


def load_dataset(spec: dict, data_dir: str | None = None, download_dir: str | None = None) -> pl.DataFrame:
    """id, text, label (Enum; null when no label column), [split], one Float64 column per target."""
    has_labels, _ = plan(spec)
    frame, source = read_user_file(spec)
    if spec["format"] == "lines":
        spec = {**spec, **LINE_COLUMNS, "header": True}
    header, missing = spec["header"], list(spec["missing_values"])

    def column(option):
        return pick_column(frame, spec[option], option, source, header)

    ids = (pl.col(column("id_column")).str.strip_chars() if spec["id_column"] is not None
           else pl.int_range(pl.len()).cast(pl.String))
    label = as_missing(column("label_column"), missing) if has_labels else pl.lit(None, dtype=pl.String)
    table = frame.select(ids.alias("id"), pl.col(column("text_column")).alias("text"), label.alias("label"))
    if spec["split_column"] is not None:
        split = frame.select(as_missing(column("split_column"), missing))
        table = table.with_columns(normalise_split(split.to_series(), source))
    targets = {pick_column(frame, key, "target_columns", source, header): name
               for key, name in _target_names(spec).items()}
    table = pl.concat([table, parse_targets(frame, targets, source, missing)], how="horizontal")
    if has_labels:
        table = table.with_columns(pl.col("label").cast(pl.Enum(_label_order(table["label"], spec, source))))
    log.info("read %d rows from %s", table.height, source)
    return table


def _label_order(labels: pl.Series, spec: dict, source: str) -> tuple[str, ...]:
    present = labels.drop_nulls().unique().to_list()
    if spec["label_order"] is None:
        return natural_order(present)
    order = tuple(spec["label_order"])
    unlisted = sorted(set(present) - set(order))
    if unlisted:
        raise DataError(f"{source}: labels {unlisted[:5]} are not in `label_order`; add them there "
                        "(or fix the file).")
    return order
