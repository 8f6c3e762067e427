"""Dataset loaders on the real files in ../shared/data, the ED official-format fixture, custom files,
and the bad-row policy of prepared tables."""

from __future__ import annotations

import json
import logging
import re
import tarfile
from pathlib import Path

import polars as pl
import pytest

from emoprobe.data import crowd_envent, custom, emobank, empathetic_dialogues, goemotions, isear
from emoprobe.data.prepare import (PREPARED_COLUMNS, build_prepared_table, prepare, probe_plan, resolve_spec,
                                   target_columns)
from emoprobe.data.sources import fetch
from emoprobe.errors import ConfigError, DataError

from .conftest import SHARED_DATA, require

FIXTURES = Path(__file__).parent / "fixtures"
TEMPLATE = "Context: {text} Answer:"

# Label occurrences per split, from goemotions/SOURCE.md.
GOEMOTIONS_COUNTS = {
    "train": dict(neutral=14219, admiration=4130, approval=2939, gratitude=2662, annoyance=2470, amusement=2328,
                  curiosity=2191, love=2086, disapproval=2022, optimism=1581, anger=1567, joy=1452, confusion=1368,
                  sadness=1326, disappointment=1269, realization=1110, caring=1087, surprise=1060, excitement=853,
                  disgust=793, desire=641, fear=596, remorse=545, embarrassment=303, nervousness=164, relief=153,
                  pride=111, grief=77),
    "dev": dict(neutral=1766, admiration=488, approval=397, gratitude=358, amusement=303, annoyance=303,
                disapproval=292, love=252, curiosity=248, optimism=209, anger=195, joy=172, disappointment=163,
                caring=153, confusion=152, sadness=143, surprise=129, realization=127, disgust=97, excitement=96,
                fear=90, desire=77, remorse=68, embarrassment=35, nervousness=21, relief=18, pride=15, grief=13),
    "test": dict(neutral=1787, admiration=504, gratitude=352, approval=351, annoyance=320, curiosity=284,
                 disapproval=267, amusement=264, love=238, anger=198, optimism=186, joy=161, sadness=156,
                 confusion=153, disappointment=151, realization=145, surprise=141, caring=135, disgust=123,
                 excitement=103, desire=83, fear=78, remorse=56, embarrassment=37, nervousness=23, pride=16,
                 relief=11, grief=6),
}
ED_TRAIN_COUNTS = dict(
    surprised=922, excited=684, proud=637, angry=637, annoyed=612, sad=608, afraid=585, grateful=585, lonely=584,
    terrified=576, guilty=573, disgusted=568, anxious=568, confident=567, impressed=564, hopeful=563,
    anticipating=561, joyful=556, furious=552, disappointed=550, nostalgic=541, jealous=536, prepared=536,
    content=516, embarrassed=514, devastated=514, caring=476, sentimental=473, trusting=454, ashamed=446,
    apprehensive=419, faithful=325)
ISEAR_COUNTS = dict(anger=1096, sadness=1096, disgust=1096, shame=1096, fear=1095, joy=1094, guilt=1093)


def shared(dataset: str) -> Path:
    folder = SHARED_DATA / dataset
    require(folder.is_dir(), f"seed data not found at {folder}")
    return folder


def counts(frame: pl.DataFrame, column: str = "label") -> dict:
    return {str(k): v for k, v in frame[column].value_counts().iter_rows()}


def load(module, spec: dict | None = None) -> pl.DataFrame:
    return module.load_dataset(resolve_spec({"type": module.__name__.rsplit(".", 1)[1], **(spec or {})}),
                               str(SHARED_DATA), "unused-download-dir")


RAW_FILES = [crowd_envent.GENERATION_FILE, *goemotions.SPLIT_FILES.values(), goemotions.EKMAN_FILE, isear.RAW_FILE,
             *empathetic_dialogues.DERIVED_FILES.values(), emobank.RAW_FILE]


@pytest.mark.parametrize("raw", RAW_FILES, ids=lambda raw: f"{raw.dataset}/{raw.name}")
def test_raw_files_are_pinned_and_match_the_shared_copies(raw, tmp_path):
    shared(raw.dataset)
    assert raw.urls and all(re.fullmatch(r"https://raw\.githubusercontent\.com/[\w.-]+/[\w.-]+/[0-9a-f]{40}/\S+", url)
                            for url in raw.urls)
    assert fetch(raw, str(SHARED_DATA), str(tmp_path)) == SHARED_DATA / raw.dataset / raw.name


# GoEmotions -----------------------------------------------------------------------------------

def test_goemotions_raw_matches_source_label_counts():
    shared("goemotions")
    frame = load(goemotions, {"labels": "raw"})
    assert frame.height == 43410 + 5426 + 5427 and frame["id"].n_unique() == frame.height
    assert counts(frame, "split") == {"train": 43410, "dev": 5426, "test": 5427}
    for split, expected in GOEMOTIONS_COUNTS.items():
        sums = frame.filter(pl.col("split") == split).select(goemotions.EMOTIONS).sum().row(0, named=True)
        assert {name: int(n) for name, n in sums.items()} == expected
    assert not frame["text"].str.contains("\t").any()
    quoted = frame.filter(pl.col("id") == "eetq9g0")["text"].item()  # CSV quoting undone
    assert quoted == 'Three words, no subtlety. "Dude. Stop. Seriously." '


def test_goemotions_single_label_keeps_one_label_rows():
    shared("goemotions")
    frame = load(goemotions, {"labels": "single_label"})
    assert counts(frame, "split") == {"train": 36308, "dev": 4548, "test": 4590}
    assert frame["label"].dtype == pl.Enum(goemotions.EMOTIONS) and frame["label"].n_unique() == 28
    raw = load(goemotions, {"labels": "raw"})
    one = raw.filter(pl.sum_horizontal(goemotions.EMOTIONS) == 1)
    assert sorted(one["id"].to_list()) == sorted(frame["id"].to_list())


def test_goemotions_ekman_drops_rows_spanning_two_classes():
    folder = shared("goemotions")
    frame = load(goemotions, {"labels": "ekman"})
    assert frame["label"].dtype == pl.Enum(goemotions.EKMAN_LABELS) and frame.height == 49469
    mapping = goemotions.read_ekman_mapping(folder / "ekman_mapping.json")
    raw = load(goemotions, {"labels": "raw"}).drop("label").join(frame.select("id", "label"), on="id", how="left")
    for row in raw.iter_rows(named=True):
        classes = {mapping[name] for name in goemotions.EMOTIONS if row[name]}
        assert (row["label"] is None) == (len(classes) > 1)
        assert row["label"] is None or {row["label"]} == classes


def test_goemotions_constants_match_the_shared_files():
    folder = shared("goemotions")
    assert tuple((folder / "emotions.txt").read_text().split()) == goemotions.EMOTIONS
    with pytest.raises(ConfigError, match=r"'datasets.<name>.labels': 'sentiment' is not one of"):
        resolve_spec({"type": "goemotions", "labels": "sentiment"})
    raw = resolve_spec({"type": "goemotions", "labels": "raw"})
    assert probe_plan(raw) == {"classification": False, "targets": list(goemotions.EMOTIONS)}


# ISEAR ----------------------------------------------------------------------------------------

def test_isear_parses_every_record_despite_pipes_in_texts():
    folder = shared("isear")
    frame = isear.parse(folder / "isear.csv")
    assert frame.height == 7666 and frame["id"].n_unique() == 7666
    assert counts(frame) == ISEAR_COUNTS
    assert frame["text"].str.contains("|", literal=True).sum() == 163


def test_isear_texts_are_repaired_and_non_answers_dropped(caplog):
    shared("isear")
    with caplog.at_level(logging.INFO, logger="emoprobe"):
        frame = load(isear)
    assert frame.height == 7666 - 154
    assert "dropped 154 of 7666 non-answers" in caplog.text
    for artefact in ("á", "|", "\\", "÷", "¦"):
        assert not frame["text"].str.contains(artefact, literal=True).any(), artefact
    assert not frame["text"].str.contains(r"^\s|\s$").any()
    for non_answer in ("[ No response.]", "NO RESPONSE", "[ Never experienced.]", "[ I have never felt this emotion.]",
                       "Doesn't apply.", "[ Do not know.]"):
        assert not frame["text"].str.contains(non_answer, literal=True).any(), non_answer
    assert frame["text"].str.contains("Wikström", literal=True).any()


def test_isear_repair_and_non_answer_rules():
    assert isear.repair_text("each time we met and á especially when") == "each time we met and especially when"
    assert isear.repair_text("it was so  á|badly hurt") == "it was so badly hurt"
    assert isear.repair_text('they needed \\clever people\\" and he had á|\\"thought of me.\\""') == \
        'they needed "clever people" and he had "thought of me."'
    assert isear.is_non_answer("[ No response.]") and isear.is_non_answer("NO RESPONSE")
    assert isear.is_non_answer("Can't remember that feeling.") and isear.is_non_answer("[ The same as in anger.]")
    assert not isear.is_non_answer("I cannot remember exactly. But once I went to a very dirty lavatory.")
    assert not isear.is_non_answer("When I did not know anyone at the party.")


# EmpatheticDialogues --------------------------------------------------------------------------

def test_empathetic_dialogues_derived_copy_matches_source():
    folder = shared("empathetic_dialogues")
    assert empathetic_dialogues.LABELS == tuple(json.loads((folder / "label2idx.json").read_text()))
    frame = load(empathetic_dialogues)
    assert counts(frame, "split") == {"train": 17802, "dev": 2761, "test": 2541}
    assert counts(frame.filter(pl.col("split") == "train")) == ED_TRAIN_COUNTS
    assert frame["id"].n_unique() == frame.height
    assert not frame["text"].str.contains(r"^\s|\s$").any()
    first = frame.row(0, named=True)  # the situation, not HypEmo's aug_text paraphrase
    assert first["text"].startswith("i remember going to the fireworks with my best friend. there was a lot")
    assert first["label"] == "sentimental"


def test_empathetic_dialogues_duplicate_texts_can_be_dropped():
    shared("empathetic_dialogues")
    table = prepare({"type": "empathetic_dialogues", "duplicate_texts": "drop"}, TEMPLATE, 0, str(SHARED_DATA), "x")
    assert not table["text"].is_duplicated().any()
    assert table.filter(pl.col("text") == "ok").height == 0  # 'ok' was labelled furious and impressed


def test_empathetic_dialogues_official_format_fixture():
    frame = empathetic_dialogues.load_dataset(
        {"format": "official", "path": str(FIXTURES / "empathetic_dialogues_official")}, None, "unused")
    assert frame["id"].to_list() == [f"hit:{h}_conv:{c}" for h, c in ((0, 1), (0, 2), (1, 3), (2, 4), (2, 5), (3, 6),
                                                                        (3, 7))]
    assert counts(frame, "split") == {"train": 3, "dev": 2, "test": 2}
    assert frame["label"].cast(pl.String).to_list() == ["sentimental", "furious", "proud", "afraid", "grateful",
                                                         "lonely", "joyful"]
    first = frame.row(0, named=True)
    assert first["text"] == "I found my grandfather's old pocket watch in the attic, still ticking."
    assert frame["text"][5] == "Everyone went home for the holidays and I stayed in the empty dorm."


def test_empathetic_dialogues_official_tarball_and_data_dir(tmp_path):
    release = tmp_path / "data" / "empathetic_dialogues" / "empatheticdialogues.tar.gz"
    release.parent.mkdir(parents=True)
    with tarfile.open(release, "w:gz") as archive:
        archive.add(FIXTURES / "empathetic_dialogues_official", arcname="empatheticdialogues")
    table = prepare({"type": "empathetic_dialogues", "format": "official"}, TEMPLATE, 0, str(tmp_path / "data"), "x")
    assert table.height == 7 and table.columns == [*PREPARED_COLUMNS, "split"]
    assert table["label_id"][0] == empathetic_dialogues.LABELS.index("sentimental")


def test_empathetic_dialogues_official_missing_or_wrong(tmp_path):
    with pytest.raises(DataError, match=r"official release not found at .*nowhere.tar.gz.*Download https://dl.fbai"):
        empathetic_dialogues.load_dataset({"format": "official", "path": str(tmp_path / "nowhere.tar.gz")}, None, "x")
    folder = tmp_path / "release"
    folder.mkdir()
    for name in ("train.csv", "valid.csv", "test.csv"):
        (folder / name).write_text((FIXTURES / "empathetic_dialogues_official" / name).read_text())
    (folder / "test.csv").write_text("conv_id,utterance_idx,context,prompt,speaker_idx,utterance\n"
                                     "hit:9_conv:9,1,bored,Nothing happened all day.,1,Meh.\n")
    with pytest.raises(DataError, match=r"test.csv, line 2: emotion 'bored' is not one of the 32"):
        empathetic_dialogues.load_dataset({"format": "official", "path": str(folder)}, None, "x")


# EmoBank and crowd-enVENT appraisals --------------------------------------------------------------

def test_emobank_targets_and_split():
    shared("emobank")
    table = prepare({"type": "emobank"}, TEMPLATE, 0, str(SHARED_DATA), "x")
    assert table.height == 10062 and table["id"].n_unique() == 10062
    assert table.columns == [*PREPARED_COLUMNS, "split", "V", "A", "D"] and target_columns(table) == ["V", "A", "D"]
    assert counts(table, "split") == {"train": 8062, "dev": 1000, "test": 1000}
    assert table["label"].null_count() == table["label_id"].null_count() == 10062
    for name, mean, sd in (("V", 2.98, 0.35), ("A", 3.04, 0.26), ("D", 3.06, 0.21)):
        assert table[name].mean() == pytest.approx(mean, abs=0.005)
        assert table[name].std() == pytest.approx(sd, abs=0.005)
    valence = prepare({"type": "emobank", "targets": ["V"]}, TEMPLATE, 0, str(SHARED_DATA), "x")
    assert target_columns(valence) == ["V"]
    with pytest.raises(DataError, match="max_per_class needs class labels"):
        prepare({"type": "emobank", "max_per_class": 10}, TEMPLATE, 0, str(SHARED_DATA), "x")


def test_crowd_envent_appraisal_targets():
    shared("crowd_envent")
    table = prepare({"type": "crowd_envent", "targets": "all"}, TEMPLATE, 0, str(SHARED_DATA), "x")
    assert target_columns(table) == list(crowd_envent.APPRAISALS) and table.height == 6600
    appraisals = table.select(crowd_envent.APPRAISALS)
    assert appraisals.null_count().sum_horizontal()[0] == 0
    assert appraisals.min().min_horizontal()[0] == 1 and appraisals.max().max_horizontal()[0] == 5
    assert table["label_id"].n_unique() == 13
    pleasantness = resolve_spec({"type": "crowd_envent", "targets": ["pleasantness"]})
    assert probe_plan(pleasantness)["targets"] == ["pleasantness"]
    with pytest.raises(ConfigError, match=r"'datasets.<name>.targets': \['valence'\] is not valid"):
        resolve_spec({"type": "crowd_envent", "targets": ["valence"]})


@pytest.mark.parametrize("spec, columns", [
    ({"type": "goemotions", "labels": "ekman"}, [*PREPARED_COLUMNS, "split"]),
    ({"type": "isear"}, list(PREPARED_COLUMNS)),
    ({"type": "crowd_envent"}, list(PREPARED_COLUMNS)),
])
def test_prepared_contract_for_classification_datasets(spec, columns):
    shared(spec["type"])
    table = prepare(spec, TEMPLATE, 0, str(SHARED_DATA), "x", cv_folds=5)
    assert table.columns == columns
    assert table["label_id"].null_count() == 0 and table["id"].n_unique() == table.height
    first = table.row(0, named=True)
    assert first["prompt"] == TEMPLATE.format(text=first["text"])


def test_dataset_options_are_checked():
    with pytest.raises(ConfigError, match=r"'datasets.<name>': 'labels' does not apply to type 'isear'"):
        resolve_spec({"type": "isear", "labels": "ekman"})
    with pytest.raises(ConfigError, match=r"'datasets.<name>.type': 'imdb' is not one of"):
        resolve_spec({"type": "imdb"})
    with pytest.raises(ConfigError, match=r"'datasets.<name>.bad_rows': 'skip' is not one of \['error', 'drop'\]"):
        resolve_spec({"type": "isear", "bad_rows": "skip"})
    with pytest.raises(ConfigError, match="'datasets.<name>.official_split': crowd_envent and isear have no official"):
        prepare({"type": "isear", "official_split": True}, TEMPLATE, 0, str(SHARED_DATA), "x")


# Custom files ---------------------------------------------------------------------------------

AWKWARD_CSV = (
    'id,text,emotion,valence,arousal,split\n'
    'a1,"She said ""hello, world"" and left",joy,0.8,0.5,train\n'
    'a2,"Line one\nline two, with a comma",sadness,-0.5,0.1,train\n'
    'a3,Café visit – naïve,joy,NA,0.3,test\n'
    'a4,Plain text,sadness,0.1,,dev\n'
    'a5,Another one,joy,0.2,0.9,valid\n'
)


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def custom_spec(path: Path, **options) -> dict:
    return {"type": "custom", "path": str(path), **options}


def test_custom_csv_with_quotes_separators_newlines_cp1252_and_missing_values(tmp_path):
    path = write(tmp_path / "mine.csv", AWKWARD_CSV, "cp1252")
    spec = custom_spec(path, encoding="cp1252", label_column="emotion", id_column="id",
                       target_columns=["valence", "arousal"], split_column="split")
    frame = custom.load_dataset(resolve_spec(spec))
    assert frame["text"].to_list() == ['She said "hello, world" and left', "Line one\nline two, with a comma",
                                       "Café visit – naïve", "Plain text", "Another one"]
    assert frame["valence"].to_list() == [0.8, -0.5, None, 0.1, 0.2]
    assert frame["arousal"].to_list() == [0.5, 0.1, 0.3, None, 0.9]
    assert frame["split"].to_list() == ["train", "train", "test", "dev", "dev"]
    assert frame["label"].dtype == pl.Enum(["joy", "sadness"])
    with pytest.raises(DataError, match=r"1 rows have no value .* target 'valence', e.g. ids \['a3'\].*bad_rows: drop"):
        prepare(spec, TEMPLATE, 0, None, "x")
    table = prepare({**spec, "bad_rows": "drop"}, TEMPLATE, 0, None, "x")
    assert table["id"].to_list() == ["a1", "a2", "a5"]
    assert table.columns == [*PREPARED_COLUMNS, "split", "valence", "arousal"]
    assert table["label_id"].to_list() == [0, 1, 0]
    assert probe_plan(resolve_spec(spec)) == {"classification": True, "targets": ["valence", "arousal"]}


def test_custom_wrong_encoding_is_named(tmp_path):
    path = write(tmp_path / "mine.csv", AWKWARD_CSV, "cp1252")
    with pytest.raises(DataError, match=r"not valid utf-8: byte b'\\xe9' .*Set the dataset's `encoding`"):
        prepare(custom_spec(path, label_column="emotion"), TEMPLATE, 0, None, "x")


def test_custom_tsv_headerless_by_position(tmp_path):
    path = write(tmp_path / "mine.tsv", "I won, finally\t1\n\"Rain\" again; sigh\t0\n\n'single' quotes\t1\n")
    spec = custom_spec(path, header=False, text_column=0, label_column=1, quote_char=None)
    table = prepare(spec, TEMPLATE, 0, None, "x")
    assert table["text"].to_list() == ["I won, finally", '"Rain" again; sigh', "'single' quotes"]
    assert table["id"].to_list() == ["0", "1", "2"] and table["label_id"].to_list() == [1, 0, 1]
    with pytest.raises(DataError, match=r"`text_column: 'text'` names a column, but `header: false`"):
        prepare(custom_spec(path, header=False, label_column=1), TEMPLATE, 0, None, "x")


def test_custom_ragged_row_names_the_line(tmp_path):
    path = write(tmp_path / "mine.tsv", "text\tlabel\nI won, finally\tjoy\nTabs\tin\ttext\tjoy\n")
    with pytest.raises(DataError, match=r"mine.tsv, line 3: 4 fields where the header has 2.*separator"):
        prepare(custom_spec(path, label_column="label"), TEMPLATE, 0, None, "x")


def test_custom_semicolon_separator_and_label_order(tmp_path):
    path = write(tmp_path / "export.txt", "sentence;rating\n\"A; B\";high\nC;low\nD;mid\n")
    spec = custom_spec(path, format="csv", separator=";", text_column="sentence", label_column="rating",
                       label_order=["low", "mid", "high"])
    table = prepare(spec, TEMPLATE, 0, None, "x")
    assert table["text"].to_list() == ["A; B", "C", "D"] and table["label_id"].to_list() == [2, 0, 1]
    with pytest.raises(DataError, match=r"labels \['mid'\] are not in `label_order`"):
        prepare({**spec, "label_order": ["low", "high"]}, TEMPLATE, 0, None, "x")
    with pytest.raises(DataError, match="cannot tell the format"):
        prepare({**spec, "format": None}, TEMPLATE, 0, None, "x")


def test_custom_jsonl_with_nulls_numbers_and_unicode(tmp_path):
    lines = [{"text": "Ünïcödé ✓ \"quoted\"", "y": 1.5, "cls": 3}, {"text": "two", "y": None, "cls": 10},
             {"text": "three", "y": 2, "cls": 3}, {"text": "four", "y": "4.5", "cls": 10}]
    path = write(tmp_path / "mine.jsonl", "\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n\n")
    spec = custom_spec(path, label_column="cls", target_columns=["y"], bad_rows="drop")
    table = prepare(spec, TEMPLATE, 0, None, "x")
    assert table["text"].to_list() == ["Ünïcödé ✓ \"quoted\"", "three", "four"]
    assert table["y"].to_list() == [1.5, 2.0, 4.5] and table["label"].to_list() == ["3", "3", "10"]
    assert table["label_id"].to_list() == [0, 0, 1]  # numeric labels sort numerically: 3 before 10
    write(tmp_path / "bad.jsonl", '{"text": "ok"}\n{"text": "broken\n')
    with pytest.raises(DataError, match=r"bad.jsonl, line 2: not valid JSON"):
        prepare(custom_spec(tmp_path / "bad.jsonl"), TEMPLATE, 0, None, "x")


def test_custom_non_numeric_target_and_missing_column(tmp_path):
    path = write(tmp_path / "mine.csv", "text,score\na,1\nb,lots\n")
    with pytest.raises(DataError, match=r"target column 'score' has 1 values that are not numbers, e.g. \['lots'\]"):
        prepare(custom_spec(path, target_columns=["score"]), TEMPLATE, 0, None, "x")
    with pytest.raises(DataError, match=r"`label_column: 'label'` is not a column of .*\['text', 'score'\]"):
        prepare(custom_spec(path, label_column="label"), TEMPLATE, 0, None, "x")
    with pytest.raises(DataError, match=r"cannot read .*missing.csv: No such file"):
        prepare(custom_spec(tmp_path / "missing.csv"), TEMPLATE, 0, None, "x")
    with pytest.raises(DataError, match="sha256 mismatch"):
        prepare(custom_spec(path, target_columns=["score"], sha256="0" * 64), TEMPLATE, 0, None, "x")


# Bad rows -------------------------------------------------------------------------------------

BAD_ROWS_CSV = ("id,text,label\n1,fine,joy\n2,   ,joy\n3,dup,anger\n3,dup again,anger\n4,no label,\n"
                "5,rare,fear\n6,more,joy\n7,more anger,anger\n")


@pytest.mark.parametrize("problem", [r"1 texts are empty or whitespace-only, e.g. ids \['2'\]",
                                     r"1 rows repeat the id of an earlier row, e.g. ids \['3'\]",
                                     r"1 texts have no label, e.g. ids \['4'\]"])
def test_bad_rows_stop_with_a_message(tmp_path, problem):
    text = BAD_ROWS_CSV
    if "whitespace" not in problem:
        text = text.replace("2,   ,joy", "2,ok,joy")
    if "repeat" not in problem:
        text = text.replace("3,dup again", "8,dup again")
    path = write(tmp_path / "bad.csv", text)
    with pytest.raises(DataError, match=problem + ".*`bad_rows: drop`"):
        prepare(custom_spec(path, id_column="id", label_column="label"), TEMPLATE, 0, None, "x")


def test_bad_rows_dropped_with_logged_counts(tmp_path, caplog):
    path = write(tmp_path / "bad.csv", BAD_ROWS_CSV)
    spec = custom_spec(path, id_column="id", label_column="label", bad_rows="drop")
    with caplog.at_level(logging.WARNING, logger="emoprobe"):
        table = prepare(spec, TEMPLATE, 0, None, "x", cv_folds=2)
    assert table["id"].to_list() == ["1", "3", "6", "7"]
    for logged in ("dropped 1 of 8 rows: texts are empty", "dropped 1 of 7 rows: rows repeat the id",
                   "dropped 1 of 6 rows: texts have no label",
                   "dropped 1 of 5 rows: texts belong to classes with fewer texts than probe.cv_folds=2 ({'fear': 1})"):
        assert logged in caplog.text
    assert table["label_id"].to_list() == [2, 0, 2, 0]  # ids keep the label order anger, fear, joy
    clean = write(tmp_path / "clean.csv", "text,label\na,joy\nb,joy\nc,fear\n")
    with pytest.raises(DataError, match=r"fewer texts than probe.cv_folds=2 \(\{'fear': 1\}\).*lower probe.cv_folds"):
        prepare(custom_spec(clean, label_column="label"), TEMPLATE, 0, None, "x", cv_folds=2)
    # Distinct texts count, not rows: two copies of one text cannot fill two test folds.
    copies = write(tmp_path / "copies.csv", "text,label\na,joy\nb,joy\nc,fear\nc,fear\n")
    with pytest.raises(DataError, match=r"2 texts belong to classes with fewer texts than probe.cv_folds=2 "
                                        r"\(\{'fear': 1\}\)"):
        prepare(custom_spec(copies, label_column="label"), TEMPLATE, 0, None, "x", cv_folds=2)


def test_labels_unseen_in_the_official_training_split(tmp_path):
    path = write(tmp_path / "split.csv", "text,label,part\na,joy,train\nb,anger,train\nc,joy,test\nd,fear,test\n"
                                         "e,anger,validation\n")
    spec = custom_spec(path, label_column="label", split_column="part", official_split=True)
    with pytest.raises(DataError, match=r"1 texts carry labels absent from the official training split \(\['fear'\]\)"):
        prepare(spec, TEMPLATE, 0, None, "x")
    table = prepare({**spec, "bad_rows": "drop"}, TEMPLATE, 0, None, "x")
    assert table["text"].to_list() == ["a", "b", "c", "e"] and table["split"].to_list() == ["train", "train", "test",
                                                                                           "dev"]
    with pytest.raises(ConfigError, match="'datasets.<name>.official_split': official_split needs split_column"):
        prepare({**spec, "split_column": None}, TEMPLATE, 0, None, "x")


def test_build_prepared_table_still_takes_a_plain_frame():
    frame = pl.DataFrame({"id": ["a", "b"], "text": ["x", "y"], "label": ["joy", "anger"]})
    table = build_prepared_table(frame, ("anger", "joy"), TEMPLATE)
    assert table.columns == list(PREPARED_COLUMNS) and table["label_id"].to_list() == [1, 0]
    with pytest.raises(DataError, match=r"labels \['joy'\] are not in the label order"):
        build_prepared_table(frame, ("anger",), TEMPLATE)


def test_custom_jsonl_numeric_labels_are_one_label_per_value(tmp_path):
    lines = [{"text": "a", "cls": 1}, {"text": "b", "cls": 1.0}, {"text": "c", "cls": 1.5}, {"text": "d", "cls": 2},
             {"text": "e", "cls": "2"}, {"text": "f", "cls": 1.5}]
    path = write(tmp_path / "mine.jsonl", "\n".join(map(json.dumps, lines)))
    frame = custom.load_dataset(resolve_spec(custom_spec(path, label_column="cls")))
    assert frame["label"].cast(pl.String).to_list() == ["1", "1", "1.5", "2", "2", "1.5"]
    assert frame["label"].dtype == pl.Enum(["1", "1.5", "2"])


def test_classes_too_small_for_the_folds_name_the_slicing_options_set():
    shared("crowd_envent")
    for options, fix in (({"max_rows": 20}, "raise max_rows,"), ({"max_per_class": 3}, "raise max_per_class,"),
                         ({"max_per_class": 3, "max_rows": 20}, "raise max_per_class or max_rows,")):
        with pytest.raises(DataError, match=r"fewer texts than probe.cv_folds=5") as error:
            prepare({"type": "crowd_envent", **options}, TEMPLATE, 0, str(SHARED_DATA), "x", cv_folds=5)
        assert f"lower probe.cv_folds or {fix}" in str(error.value)


def test_a_single_class_left_is_refused_before_extraction(tmp_path):
    path = write(tmp_path / "mine.csv", "text,label\na,joy\nb,joy\nc,joy\nd,fear\n")
    with pytest.raises(DataError, match=r"only one class, 'joy', is left of the source's 2 \(fear, joy\): "
                                        r"bad_rows: drop removed the others"):
        prepare(custom_spec(path, label_column="label", bad_rows="drop"), TEMPLATE, 0, None, "x", cv_folds=2)
    write(path, "text,label\na,joy\nb,joy\n")
    with pytest.raises(DataError, match=r"only one class, 'joy'.*in the source"):
        prepare(custom_spec(path, label_column="label"), TEMPLATE, 0, None, "x")
    shared("crowd_envent")
    with pytest.raises(DataError, match=r"only one class, '\w+', is left of the source's 13 .*: max_rows: 1 removed"):
        prepare({"type": "crowd_envent", "max_rows": 1}, TEMPLATE, 0, str(SHARED_DATA), "x")
