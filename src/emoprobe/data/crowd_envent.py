"""crowd-enVENT (Troiano et al. 2023) as used by Tak et al. 2025: 6,600 texts, 13 emotions."""

from __future__ import annotations

import polars as pl

from ..errors import DataError
from .custom import parse_targets
from .sources import RawFile, fetch

GENERATION_FILE = RawFile(
    dataset="crowd_envent",
    name="enVent_gen_Data.csv",
    sha256="941683c991923cdecf2953c4c945227bbbd3678b96139564c7ed68cb432c5a2c",
    urls=(
        # Tak et al.'s repository at a pinned commit (the file they probe with).
        "https://raw.githubusercontent.com/aminbana/emo-llm/"
        "8d4ed2312aa7ac8783552ba3614d798e45462711/data/enVent_gen_Data.csv",
    ),
)

# Tak et al.'s id order (`no-emotion` renamed to `neutral`).
LABELS = ("anger", "boredom", "disgust", "fear", "guilt", "joy", "neutral",
          "pride", "relief", "sadness", "shame", "surprise", "trust")

APPRAISALS = (
    "suddenness", "familiarity", "predict_event", "pleasantness", "unpleasantness",
    "goal_relevance", "chance_responsblt", "self_responsblt", "other_responsblt",
    "predict_conseq", "goal_support", "urgency", "self_control", "other_control",
    "chance_control", "accept_conseq", "standards", "social_norms", "attention",
    "not_consider", "effort",
)


def _targets(spec: dict) -> tuple[str, ...]:
    """The spec's `targets`: appraisal names, or "all" for the 21."""
    return APPRAISALS if spec["targets"] == "all" else tuple(spec["targets"])


def plan(spec: dict) -> tuple[bool, tuple[str, ...]]:
    """(has class labels, regression target names)."""
    return True, _targets(spec)


def load_dataset(spec: dict, data_dir: str | None, download_dir: str) -> pl.DataFrame:
    """`load` on the fetched file, labels as an Enum in Tak et al.'s order, plus appraisal targets."""
    frame = load(fetch(GENERATION_FILE, data_dir, download_dir), _targets(spec))
    return frame.with_columns(pl.col("label").cast(pl.Enum(LABELS)))


def load(path, targets: tuple[str, ...] = ()) -> pl.DataFrame:
    """Read the generation file (cp1252) -> id, text, label (masked `hidden_emo_text`), [appraisals]."""
    with open(path, "rb") as handle:
        raw = handle.read()
    try:
        decoded = raw.decode("cp1252")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a cp1252 crowd-enVENT file ({exc}).") from exc
    frame = pl.read_csv(decoded.encode("utf-8"), infer_schema_length=0)
    missing = {"text_id", "hidden_emo_text", "emotion", *targets} - set(frame.columns)
    if missing:
        raise DataError(f"{path}: columns {sorted(missing)} are missing; is this enVent_gen_Data.csv?")
    appraisals = parse_targets(frame, {name: name for name in targets}, str(path))
    frame = frame.select(
        pl.col("text_id").alias("id"),
        pl.col("hidden_emo_text").alias("text"),
        pl.col("emotion").replace("no-emotion", "neutral").alias("label"),
    ).hstack(appraisals)
    unknown = set(frame["label"].unique()) - set(LABELS)
    if unknown:
        raise DataError(f"{path}: unknown emotion labels {sorted(map(str, unknown))}; expected {LABELS}.")
    return frame
