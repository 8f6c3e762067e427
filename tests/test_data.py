"""crowd-enVENT loading, raw-file resolution and sha256 checks."""

from __future__ import annotations

import shutil

import pytest

from emoprobe.data import crowd_envent
from emoprobe.data.prepare import prepare, subsample_per_class
from emoprobe.data.sources import RawFile, fetch, sha256_of
from emoprobe.errors import DataError

from .conftest import SHARED_DATA, crowd_envent_path

SOURCE_COUNTS = {label: 550 for label in crowd_envent.LABELS} | {"guilt": 275, "shame": 275}


def test_crowd_envent_matches_its_source_notes():
    frame = crowd_envent.load(crowd_envent_path())
    assert frame.height == 6600 and frame["id"].n_unique() == 6600
    assert dict(frame["label"].value_counts().iter_rows()) == SOURCE_COUNTS
    assert not frame["text"].str.contains("\x92").any()
    assert frame["text"].str.contains("\u2019").sum() > 100  # cp1252 0x92 decoded to a real apostrophe
    assert frame["text"].str.contains(r"\.\.\.").sum() >= 2135  # the masked emotion words


def test_prepared_table_contract():
    table = prepare({"type": "crowd_envent", "max_per_class": None}, "Context: {text} Answer:", 0,
                    str(SHARED_DATA), "unused")
    assert table.columns == ["id", "text", "prompt", "label", "label_id"]
    assert table.height == 6600
    ids = dict(table.select("label", "label_id").unique().iter_rows())
    assert ids == {label: i for i, label in enumerate(crowd_envent.LABELS)}
    first = table.row(0, named=True)
    assert first["prompt"] == f"Context: {first['text']} Answer:"


def test_subsample_is_stratified_and_seeded():
    frame = crowd_envent.load(crowd_envent_path())
    a, b = subsample_per_class(frame, 40, 0), subsample_per_class(frame, 40, 1)
    assert set(a["label"].value_counts()["count"].to_list()) == {40}
    assert a["id"].to_list() == subsample_per_class(frame, 40, 0)["id"].to_list()
    assert a["id"].to_list() != b["id"].to_list()


def test_fetch_prefers_data_dir_and_checks_sha(tmp_path):
    assert fetch(crowd_envent.GENERATION_FILE, str(SHARED_DATA), str(tmp_path)) == crowd_envent_path()
    bad_dir = tmp_path / "data" / "crowd_envent"
    bad_dir.mkdir(parents=True)
    shutil.copy(crowd_envent_path(), bad_dir / "enVent_gen_Data.csv")
    with open(bad_dir / "enVent_gen_Data.csv", "ab") as handle:
        handle.write(b"tampered")
    with pytest.raises(DataError, match=r"sha256 mismatch .*expected 941683c9.*delete it to download"):
        fetch(crowd_envent.GENERATION_FILE, str(tmp_path / "data"), str(tmp_path / "dl"))


def test_missing_file_without_network_names_where_to_put_it(tmp_path):
    raw = RawFile("toy", "toy.csv", "0" * 64, ("http://127.0.0.1:9/toy.csv",))
    with pytest.raises(DataError, match=r"'toy.csv' of dataset 'toy' is missing .*127.0.0.1:9.*Put a copy at"):
        fetch(raw, str(tmp_path / "nowhere"), str(tmp_path / "dl"), timeout=5)
    assert not (tmp_path / "dl" / "toy" / "toy.csv").exists()


def test_download_is_checked_and_cached(tmp_path):
    """The download path is real code: served here from a local file:// address."""
    source = crowd_envent_path()
    raw = RawFile("crowd_envent", source.name, sha256_of(source), (source.as_uri(),))
    fetched = fetch(raw, None, str(tmp_path))
    assert fetched == tmp_path / "crowd_envent" / source.name and sha256_of(fetched) == raw.sha256
    wrong = RawFile("other", source.name, "f" * 64, (source.as_uri(),))
    with pytest.raises(DataError, match="sha256 mismatch"):
        fetch(wrong, None, str(tmp_path))


def test_wrong_file_is_refused(tmp_path):
    bogus = tmp_path / "bogus.csv"
    bogus.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match=r"columns \['emotion', 'hidden_emo_text', 'text_id'\] are missing"):
        crowd_envent.load(bogus)


def test_max_rows_is_a_seeded_sample_in_file_order():
    from emoprobe.data.prepare import subsample_rows

    frame = crowd_envent.load(crowd_envent_path())
    sample = subsample_rows(frame, 100, seed=3)
    assert sample.height == 100 and sample["id"].to_list() == subsample_rows(frame, 100, seed=3)["id"].to_list()
    positions = [frame["id"].to_list().index(i) for i in sample["id"].to_list()]
    assert positions == sorted(positions)
