"""GoEmotions (Demszky et al. 2020): 54,263 Reddit comments, 28 labels, multi-label.

`labels` picks the task: single_label (comments with exactly one of the 28 labels),
ekman (labels mapped with ekman_mapping.json to Ekman-6 + neutral; comments whose labels
map to more than one class are dropped) or raw (every comment, one 0/1 regression target
per label, no classes). The standard train/dev/test files are joined; `split` says which
file a row came from (used when the dataset's `official_split` is on).
"""

from __future__ import annotations

import json
import logging

import polars as pl

from ..errors import DataError
from .custom import decode_file, read_delimited
from .sources import RawFile, fetch

log = logging.getLogger(__name__)

# monologg/GoEmotions-pytorch is the byte source of the shared copy; google-research the original.
_MIRROR = "https://raw.githubusercontent.com/monologg/GoEmotions-pytorch/b75f9d3a8b76bc1060687925b04ca98a1b8ea66b/"
_GOOGLE = "https://raw.githubusercontent.com/google-research/google-research/{commit}/goemotions/data/{name}"


def _raw(name: str, sha256: str, google_commit: str, mirror_path: str | None = None) -> RawFile:
    urls = ((_MIRROR + mirror_path,) if mirror_path else ()) + (_GOOGLE.format(commit=google_commit, name=name),)
    return RawFile("goemotions", name, sha256, urls)


SPLIT_FILES = {
    "train": _raw("train.tsv", "1c254a142be5c00e80d819b9ae1bbd36d94b2eeb8f4b1271846508d57e57d9c5",
                  "2adf640a14f11025ae5a9d0ec493b78530d276d3", "data/original/train.tsv"),
    "dev": _raw("dev.tsv", "575489c079c9de1097062a01738f998590d6b7ead66dd1c9fd1d2ba01fd8bc62",
                "2adf640a14f11025ae5a9d0ec493b78530d276d3", "data/original/dev.tsv"),
    "test": _raw("test.tsv", "0587b2dd8b27b97352adbfc3fb083d46005c8946657fdc2b1ca8b1cc7f1f8be4",
                 "b91598b43297db06cca27a29fe2d0442dffea029", "data/original/test.tsv"),
}
EKMAN_FILE = _raw("ekman_mapping.json", "d6b1fea382917c1685c42e1324a0344106be9390f52a3850ce032656d103a328",
                  "7c35f3f048c1bbf1416bf12491e4a2e528f2f988")

# emotions.txt order: the label ids used in the TSV files.
EMOTIONS = (
    "admiration", "amusement", "anger", "annoyance", "approval", "caring", "confusion", "curiosity",
    "desire", "disappointment", "disapproval", "disgust", "embarrassment", "excitement", "fear",
    "gratitude", "grief", "joy", "love", "nervousness", "optimism", "pride", "realization", "relief",
    "remorse", "sadness", "surprise", "neutral",
)
EKMAN_LABELS = ("anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral")


def plan(spec: dict) -> tuple[bool, tuple[str, ...]]:
    """(has class labels, regression target names): raw has 28 0/1 targets and no classes."""
    return (False, EMOTIONS) if spec["labels"] == "raw" else (True, ())


def read_split(path, split: str) -> pl.DataFrame:
    """One headerless TSV (text, comma-separated label ids, comment id) -> id, text, label_ids, split."""
    frame = read_delimited(decode_file(path), str(path), separator="\t", header=False)
    if frame.width != 3:
        raise DataError(f"{path}: {frame.width} columns, expected 3 (text, label ids, comment id).")
    label_ids = frame["1"].str.split(",").list.eval(pl.element().str.strip_chars().cast(pl.Int64, strict=False))
    bad = frame.filter(label_ids.list.eval(pl.element().is_null() | (pl.element() < 0)
                                           | (pl.element() >= len(EMOTIONS))).list.any())
    if bad.height:
        raise DataError(f"{path}: label ids {bad['1'].head(3).to_list()} are not integers in 0..27; "
                        "is this a GoEmotions file?")
    return pl.DataFrame({"id": frame["2"], "text": frame["0"], "label_ids": label_ids,
                         "split": pl.Series([split] * frame.height, dtype=pl.String)})


def read_ekman_mapping(path) -> dict[str, str]:
    """GoEmotions label -> Ekman class (neutral -> neutral); checks every label is mapped once."""
    mapping = {"neutral": "neutral"}
    for ekman, members in json.loads(decode_file(path)).items():
        for emotion in members:
            if emotion in mapping:
                raise DataError(f"{path}: {emotion!r} is mapped twice.")
            mapping[emotion] = ekman
    if set(mapping) != set(EMOTIONS) or set(mapping.values()) != set(EKMAN_LABELS):
        raise DataError(f"{path}: does not map the 28 GoEmotions labels onto {EKMAN_LABELS}.")
    return mapping


def _keep_single(frame: pl.DataFrame, classes: pl.Expr, labels: tuple[str, ...], why: str) -> pl.DataFrame:
    """Keep the rows whose `classes` list has exactly one distinct entry; log what was dropped."""
    frame = frame.with_columns(classes.list.unique().alias("_classes"))
    single = frame.filter(pl.col("_classes").list.len() == 1)
    log.info("goemotions: dropped %d of %d comments %s", frame.height - single.height, frame.height, why)
    return single.select("id", "text", pl.col("_classes").list.first().cast(pl.Enum(labels)).alias("label"),
                         "split")


def load_dataset(spec: dict, data_dir: str | None, download_dir: str) -> pl.DataFrame:
    """id, text, label (Enum, or null for raw), split (train/dev/test), [28 0/1 targets for raw]."""
    labels = spec["labels"]
    frame = pl.concat([read_split(fetch(raw, data_dir, download_dir), split) for split, raw in SPLIT_FILES.items()])
    names = pl.col("label_ids").list.eval(pl.element().replace_strict(dict(enumerate(EMOTIONS)),
                                                                      return_dtype=pl.String))
    if labels == "single_label":
        return _keep_single(frame, names, EMOTIONS, "with more than one label")
    if labels == "ekman":
        mapping = read_ekman_mapping(fetch(EKMAN_FILE, data_dir, download_dir))
        ekman = names.list.eval(pl.element().replace_strict(mapping, return_dtype=pl.String))
        return _keep_single(frame, ekman, EKMAN_LABELS, "whose labels map to more than one Ekman class")
    indicators = [pl.col("label_ids").list.contains(i).cast(pl.Float64).alias(name) for i, name in enumerate(EMOTIONS)]
    return frame.select("id", "text", pl.lit(None, dtype=pl.String).alias("label"), "split", *indicators)

