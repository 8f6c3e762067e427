"""Raw data files: take a local copy when present, otherwise download; always sha256-check."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RawFile:
    """One raw file of a dataset, with where it canonically lives and its checksum."""

    dataset: str
    name: str
    sha256: str
    urls: tuple[str, ...]


_reads: dict[str, str] | None = None  # set inside `recording_reads`


@contextmanager
def recording_reads():
    """Collect {path: sha256} of every raw file the loaders read inside the block (for provenance)."""
    global _reads
    _reads = {}
    try:
        yield _reads
    finally:
        _reads = None


def note_read(path: str | os.PathLike, sha256: str | None = None, content: bytes | None = None) -> None:
    """Record a raw file read (inside `recording_reads`): its sha256 given, of `content`, or of the file."""
    if _reads is not None:
        _reads[str(path)] = sha256 or (hashlib.sha256(content).hexdigest() if content is not None else sha256_of(path))


PREPARED_RECORD = "emoprobe"  # the prepared parquet's metadata key: what prepare_dataset read and dropped


def read_prepared_record(path: str | os.PathLike) -> dict:
    """A prepared table's record (raw files read with their sha256, rows read, dropped, kept); {} if none."""
    import polars as pl

    return json.loads(pl.read_parquet_metadata(path).get(PREPARED_RECORD, "{}"))


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check(path: Path, raw: RawFile, shown_as: str | None = None) -> Path:
    actual = sha256_of(path)
    if actual != raw.sha256:
        raise DataError(
            f"sha256 mismatch for {shown_as or path}: expected {raw.sha256}, got {actual}. The file is "
            f"corrupt or a different version; replace it with the file from {raw.urls[0]} "
            "(or delete it to download it again)."
        )
    return path


def _download(url: str, raw: RawFile, destination: Path, timeout: float) -> None:
    """Download to a temporary file; move it into place only once its sha256 is right."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
        fd, tmp = tempfile.mkstemp(dir=destination.parent, prefix=destination.name, suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                while block := response.read(1 << 20):
                    out.write(block)
            _check(Path(tmp), raw, shown_as=url)
            os.replace(tmp, destination)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def fetch(raw: RawFile, data_dir: str | None, download_dir: str, timeout: float = 60) -> Path:
    """Path of a verified copy of `raw`: from data_dir if present, else downloaded (noted as read)."""
    path = _verified_copy(raw, data_dir, download_dir, timeout)
    note_read(path, raw.sha256)
    return path


def _verified_copy(raw: RawFile, data_dir: str | None, download_dir: str, timeout: float) -> Path:
    if data_dir is not None:
        local = Path(data_dir) / raw.dataset / raw.name
        if local.exists():
            return _check(local, raw)
    cached = Path(download_dir) / raw.dataset / raw.name
    if cached.exists():
        return _check(cached, raw)
    failures = []
    for url in raw.urls:
        try:
            log.info("downloading %s", url)
            _download(url, raw, cached, timeout)
            return cached
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            failures.append(f"{url}: {exc}")
    where = f"{Path(data_dir) / raw.dataset / raw.name} or " if data_dir else ""
    raise DataError(
        f"raw file '{raw.name}' of dataset '{raw.dataset}' is missing and could not be "
        f"downloaded ({'; '.join(failures)}). Put a copy at {where}{cached}, or set "
        "`data_dir` in the config to a folder holding <dataset>/<file>."
    )
