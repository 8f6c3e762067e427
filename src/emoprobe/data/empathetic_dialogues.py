"""EmpatheticDialogues (Rashkin et al. 2019): situation -> one of 32 emotions, one row per conversation.

Two formats:
- derived (default): HypEmo's preprocessed copy (lowercased situation, label id 0-31 in
  HypEmo's label2idx order; `aug_text` is a paraphrase and never used), downloaded and
  sha256-checked like the other datasets.
- official: the release users download from ParlAI (empatheticdialogues.tar.gz, one row
  per utterance: conv_id, utterance_idx, context, prompt, ...). The situation `prompt` of
  each conversation's first row is the text, `context` the label. There is no published
  checksum, so it is read from `path` (the .tar.gz or the extracted folder) or from
  <data_dir>/empathetic_dialogues/, and the sha256 of what was read is logged.
"""

from __future__ import annotations

import io
import logging
import re
import tarfile
from pathlib import Path

import polars as pl

from ..errors import DataError
from .custom import decode_file, read_delimited
from .sources import RawFile, fetch, note_read, sha256_of

log = logging.getLogger(__name__)

_HYPEMO = "https://raw.githubusercontent.com/dinobby/HypEmo/97ec6af6b19b831f69cb35a82dc65ea1395fa157/data/ED/"
DERIVED_FILES = {
    "train": RawFile("empathetic_dialogues", "train.csv",
                     "3802033124c7f00b7aaa03f0d963752c8bd01175e2876ea39ed80b37b9e2ea4d", (_HYPEMO + "train.csv",)),
    "dev": RawFile("empathetic_dialogues", "valid.csv",
                   "1cc46f314fbd67ee4bc1a6eacd3a21122bba52d8e8986abb938d71323d6e66bb", (_HYPEMO + "valid.csv",)),
    "test": RawFile("empathetic_dialogues", "test.csv",
                    "d04847887b873dd2101b2c340caf19073ff7718caa16a160ea62bf7782ebfa21", (_HYPEMO + "test.csv",)),
}
OFFICIAL_URL = "https://dl.fbaipublicfiles.com/parlai/empatheticdialogues/empatheticdialogues.tar.gz"
OFFICIAL_SPLITS = {"train": "train.csv", "dev": "valid.csv", "test": "test.csv"}
OFFICIAL_HEADER = ["conv_id", "utterance_idx", "context", "prompt"]

# HypEmo config.py get_dicts('ED') (= label2idx.json): label id order for both formats.
LABELS = (
    "sad", "trusting", "terrified", "caring", "disappointed", "faithful", "joyful", "jealous",
    "disgusted", "surprised", "ashamed", "afraid", "impressed", "sentimental", "devastated", "excited",
    "anticipating", "annoyed", "anxious", "furious", "content", "lonely", "angry", "confident",
    "apprehensive", "guilty", "embarrassed", "grateful", "hopeful", "proud", "prepared", "nostalgic",
)


def plan(spec: dict) -> tuple[bool, tuple[str, ...]]:
    return True, ()


def read_derived(path, split: str) -> pl.DataFrame:
    """HypEmo CSV (text, aug_text, label id) -> id, text (stripped), label, split."""
    frame = read_delimited(decode_file(path), str(path))
    if not {"text", "label"} <= set(frame.columns):
        raise DataError(f"{path}: columns {frame.columns}, expected text, aug_text, label; is this HypEmo's ED file?")
    label_id = frame["label"].str.strip_chars().cast(pl.Int64, strict=False)
    bad = frame.filter(label_id.is_null() | ~label_id.is_between(0, len(LABELS) - 1))
    if bad.height:
        raise DataError(f"{path}: labels {bad['label'].head(3).to_list()} are not ids 0..{len(LABELS) - 1}.")
    return pl.DataFrame({
        "id": [f"{split}-{i}" for i in range(frame.height)],
        "text": frame["text"].str.strip_chars(),
        "label": label_id.replace_strict(dict(enumerate(LABELS)), return_dtype=pl.String).cast(pl.Enum(LABELS)),
        "split": [split] * frame.height,
    })


def read_official(text: str, source: str, split: str) -> pl.DataFrame:
    """One split of the release -> id (conv_id), text (situation prompt), label (context), split.

    Fields are split on ',' as in ParlAI (commas inside texts are written `_comma_`); only
    the first four are used, so rows with stray extra fields further right still parse.
    """
    lines = text.splitlines()
    if not lines or lines[0].split(",")[:4] != OFFICIAL_HEADER:
        raise DataError(f"{source}: header {lines[0][:80] if lines else ''!r} does not start with "
                        f"{','.join(OFFICIAL_HEADER)}; is this a file from {OFFICIAL_URL}?")
    seen, rows, stray = set(), [], []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split(",")
        if not line.strip():
            continue
        if len(fields) < 4 or not re.fullmatch(r"hit:\d+_conv:\d+", fields[0]):
            stray.append(number)
            continue
        if fields[0] in seen:
            continue
        seen.add(fields[0])
        if fields[2] not in LABELS:
            raise DataError(f"{source}, line {number}: emotion {fields[2]!r} is not one of the 32 labels {LABELS}.")
        rows.append((fields[0], fields[3].replace("_comma_", ",").strip(), fields[2]))
    if stray:
        log.warning("%s: skipped %d lines that do not start with a conv_id (hit:N_conv:M) and 3 more fields, "
                    "e.g. lines %s", source, len(stray), stray[:5])
    return pl.DataFrame(rows, schema={"id": pl.String, "text": pl.String, "label": pl.Enum(LABELS)},
                        orient="row").with_columns(pl.lit(split).alias("split"))


def _official_source(spec: dict, data_dir: str | None) -> Path:
    """The .tar.gz or folder holding the release: `path`, else one under <data_dir>/empathetic_dialogues/."""
    if spec["path"]:
        candidates = [Path(spec["path"])]
    elif data_dir:
        folder = Path(data_dir) / "empathetic_dialogues"
        candidates = [folder / "empatheticdialogues.tar.gz", folder / "empatheticdialogues"]
    else:
        candidates = []
    for candidate in candidates:
        if candidate.exists():
            return candidate
    where = " or ".join(map(str, candidates)) or "nowhere (no `path` and no data_dir)"
    raise DataError(f"EmpatheticDialogues official release not found at {where}. Download {OFFICIAL_URL} "
                    "(no checksum is published, so it is never fetched automatically) and set the dataset's "
                    "`path` to the .tar.gz or to the extracted folder holding train.csv, valid.csv, test.csv.")


def _official_texts(source: Path) -> dict[str, tuple[str, str]]:
    """split -> (file text, name for messages), from a .tar.gz or a folder (or its empatheticdialogues/)."""
    digest = sha256_of(source) if source.is_file() else None
    log.info("empathetic_dialogues: reading %s (sha256 %s)", source, digest or "of each file below")
    if digest:
        note_read(source, digest)
        try:
            with tarfile.open(source) as archive:
                members = {Path(m.name).name: m for m in archive.getmembers() if m.isfile()}
                missing = [name for name in OFFICIAL_SPLITS.values() if name not in members]
                if missing:
                    raise DataError(f"{source} holds no {missing}; is it empatheticdialogues.tar.gz?")
                return {split: (io.TextIOWrapper(archive.extractfile(members[name]), encoding="utf-8").read(),
                                f"{source}:{members[name].name}") for split, name in OFFICIAL_SPLITS.items()}
        except tarfile.TarError as exc:
            raise DataError(f"{source} is not a readable tar archive ({exc}).") from exc
    folder = source / "empatheticdialogues" if (source / "empatheticdialogues").is_dir() else source
    missing = [name for name in OFFICIAL_SPLITS.values() if not (folder / name).is_file()]
    if missing:
        raise DataError(f"{folder} lacks {missing}; point `path` at the extracted empatheticdialogues folder.")
    for name in OFFICIAL_SPLITS.values():
        log.info("empathetic_dialogues: %s sha256 %s", folder / name, sha256_of(folder / name))
    return {split: (decode_file(folder / name), str(folder / name)) for split, name in OFFICIAL_SPLITS.items()}


def load_dataset(spec: dict, data_dir: str | None, download_dir: str) -> pl.DataFrame:
    """id, text, label (Enum, HypEmo order), split (train/dev/test)."""
    if spec["format"] == "derived":
        return pl.concat([read_derived(fetch(raw, data_dir, download_dir), split)
                          for split, raw in DERIVED_FILES.items()])
    texts = _official_texts(_official_source(spec, data_dir))
    frame = pl.concat([read_official(text, source, split) for split, (text, source) in texts.items()])
    log.info("empathetic_dialogues: %d conversations (%s)", frame.height,
             ", ".join(f"{s} {n}" for s, n in frame.group_by("split", maintain_order=True).len().iter_rows()))
    return frame
