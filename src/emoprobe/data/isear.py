"""ISEAR (Scherer & Wallbott 1994): 7,666 self-reported emotion episodes, 7 emotions.

The `|`-separated export has `|` inside 163 situation texts, so each line is split by
position (40 fields, the text, STATE, an empty last field). Texts are repaired (the ` á `
soft line breaks, `|` line breaks, `\\"` quotes, `÷` and `¦`), and non-answers such as
`[ No response.]` are dropped with a logged count.
"""

from __future__ import annotations

import logging
import re
from collections import Counter

import polars as pl

from ..errors import DataError
from .custom import decode_file
from .sources import RawFile, fetch

log = logging.getLogger(__name__)

RAW_FILE = RawFile(
    dataset="isear",
    name="isear.csv",
    sha256="370110fff70a1e1d9e23b10cf6db1f64876120fa02276afe5916fbfeb038cdca",
    urls=("https://raw.githubusercontent.com/sinmaniphel/py_isear_dataset/"
          "948f4cf80161ea28e6dc5bfb4ad729f21ff47723/isear.csv",),
)

# EMOT codes 1..7, in that order.
LABELS = ("joy", "fear", "anger", "sadness", "disgust", "shame", "guilt")

N_META = 40  # ID ... MYKEY, before the free text
EMOT, FIELD1, MYKEY = 11, 36, 39

# Whole answers (after repair, brackets and final punctuation removed, lowercased) that
# describe no event. Patterns other than the first only count for one-sentence answers,
# so "Can't remember exactly. But once I ..." is kept.
_NO_RESPONSE = re.compile(r"no (response|reponse|description|answer)\b.*")
_NON_ANSWERS = re.compile("|".join([
    r"(it )?(does ?n[o']t|not) apply\b.*",
    r"(.*\b)?not applicable\b.*",
    r".*\bn/a",
    r"(i )?(can ?not|can'?t|do not|don'?t) (remember|recall|think of|know)\b.*",
    r"(i )?(have )?(never|not) (felt|experienced)\b.*",
    r"(the )?same (as|for)\b.*",
    r"nothing|none|never",
]))


def plan(spec: dict) -> tuple[bool, tuple[str, ...]]:
    return True, ()


def repair_text(text: str) -> str:
    """Undo the export's artefacts: soft breaks (á), `|` breaks, `\\"` quotes, ÷ (ö), ¦ (°)."""
    if "\\" in text:  # \"quoted\" words: the opening quote lost, a stray field quote at the end
        text = (text[:-1] if text.endswith('"') else text).replace('\\"', '"').replace("\\", '"')
    text = re.sub(r"\s*[á|][\sá|]*", " ", text)
    return text.replace("÷", "ö").replace("¦", "°").strip()


def is_non_answer(text: str) -> bool:
    """True for answers that report no event: `[ No response.]`, `Doesn't apply.`, `[ Never experienced.]`..."""
    core = text.strip().strip("[]").strip().lower().rstrip(' ."]').strip()
    if _NO_RESPONSE.fullmatch(core):
        return True
    return not re.search(r"[.!?]\s+\S", core) and bool(_NON_ANSWERS.fullmatch(core))


def parse(path) -> pl.DataFrame:
    """Every record of the export -> id (MYKEY), raw SIT text, label (Field1, checked against EMOT)."""
    lines = decode_file(path).split("\n")
    header = lines[0].rstrip("\r").split("|")
    if header[N_META:] != ["SIT", "STATE", ""] or header[MYKEY] != "MYKEY":
        raise DataError(f"{path}: header ends {header[N_META - 1:]}, expected MYKEY|SIT|STATE|; is this isear.csv?")
    ids, texts, labels = [], [], []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.rstrip("\r").split("|")
        if len(fields) < N_META + 3 or fields[-1] != "":
            raise DataError(f"{path}, line {number}: {len(fields)} fields ending {fields[-1]!r}; expected at "
                            f"least {N_META + 3} ending with an empty field.")
        label, code = fields[FIELD1], fields[EMOT]
        if label not in LABELS or code != str(LABELS.index(label) + 1):
            raise DataError(f"{path}, line {number}: emotion {label!r} with EMOT code {code!r}; expected one "
                            f"of {LABELS} with its code 1..7.")
        ids.append(fields[MYKEY])
        texts.append("|".join(fields[N_META:-2]))
        labels.append(label)
    return pl.DataFrame({"id": ids, "text": texts, "label": labels}, schema={
        "id": pl.String, "text": pl.String, "label": pl.Enum(LABELS)})


def load_dataset(spec: dict, data_dir: str | None, download_dir: str) -> pl.DataFrame:
    """id, text (repaired), label (Enum, EMOT order); non-answers dropped and logged."""
    frame = parse(fetch(RAW_FILE, data_dir, download_dir))
    frame = frame.with_columns(pl.col("text").map_elements(repair_text, return_dtype=pl.String))
    non_answer = frame["text"].map_elements(is_non_answer, return_dtype=pl.Boolean)
    dropped = frame.filter(non_answer)
    if dropped.height:
        common = Counter(dropped["text"].to_list()).most_common(3)
        log.info("isear: dropped %d of %d non-answers (most common: %s)", dropped.height, frame.height,
                 ", ".join(f"{text!r} x{n}" for text, n in common))
    return frame.filter(~non_answer)
