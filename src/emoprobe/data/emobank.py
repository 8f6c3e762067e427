"""EmoBank (Buechel & Hahn 2017): 10,062 sentences with continuous valence, arousal, dominance.

No classes: V, A and D (1-5, reader/writer weighted average) are regression targets. The
authors' train/dev/test split (stratified by genre) is kept as `split`.
"""

from __future__ import annotations

import polars as pl

from ..errors import DataError
from .custom import decode_file, normalise_split, parse_targets, read_delimited
from .sources import RawFile, fetch

RAW_FILE = RawFile(
    dataset="emobank",
    name="emobank.csv",
    sha256="1ade4a4a453e880c0f39d0536d2b355e8a716e0cf88236c64cdb4d438cf9605b",
    urls=("https://raw.githubusercontent.com/JULIELab/EmoBank/"
          "248ce2a43e165a66d31aeaed83cff9641d6654e0/corpus/emobank.csv",),
)

DIMENSIONS = ("V", "A", "D")


def plan(spec: dict) -> tuple[bool, tuple[str, ...]]:
    return False, tuple(spec["targets"])


def load_dataset(spec: dict, data_dir: str | None, download_dir: str) -> pl.DataFrame:
    """id, text, label (null), split, and the chosen V/A/D columns as Float64."""
    targets = spec["targets"]
    path = fetch(RAW_FILE, data_dir, download_dir)
    frame = read_delimited(decode_file(path), str(path))
    missing = {"id", "split", "text", *DIMENSIONS} - set(frame.columns)
    if missing:
        raise DataError(f"{path}: columns {sorted(missing)} are missing; is this corpus/emobank.csv?")
    return pl.concat([
        frame.select("id", "text", pl.lit(None, dtype=pl.String).alias("label"),
                     normalise_split(frame["split"], str(path))),
        parse_targets(frame, {name: name for name in targets}, str(path)),
    ], how="horizontal")
