"""The run's provenance manifest (results/report/provenance.json): the resolved config, the
workflow's git commit, package versions, the sha256 of every raw data file and model file used,
and for every output table the job and inputs it came from (Snakemake's own record of each job)."""

from __future__ import annotations

import base64
import importlib.metadata
import json
import subprocess
from pathlib import Path

from .data.sources import read_prepared_record, sha256_of

PACKAGES = ("emoprobe", "torch", "transformers", "safetensors", "scikit-learn", "numpy", "polars", "snakemake",
            "altair", "vl-convert-python", "gguf", "datasets")
TABLE_SUFFIXES = (".parquet", ".csv")
SNAKEMAKE_RECORDS = Path(".snakemake") / "metadata"  # one JSON record per output, named by its path in base64


def package_versions() -> dict[str, str | None]:
    """The installed version of each package the results depend on (None: not installed)."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


WORKFLOW_DIR = Path(__file__).resolve().parents[2]  # src/emoprobe/ -> the workflow's folder


def workflow_commit(directory: str | Path = WORKFLOW_DIR) -> dict:
    """The git commit of the workflow's folder when this runs, and whether its tracked files differ from it."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    changes = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": None if changes is None else bool(changes)}


def model_files(metadata: dict, spec: dict) -> list[dict]:
    """The weight files of a model with their sha256: the GGUF file (as the shards record it), or
    the config and safetensors files of a local folder. A Hub model is named by its commit instead."""
    if metadata.get("file_sha256"):
        return [{"file": metadata["model_id"], "sha256": metadata["file_sha256"]}]
    if spec.get("source") == "local":
        folder = Path(spec["path"]).expanduser()
        files = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.json"))
        return [{"file": str(path), "sha256": sha256_of(path)} for path in files]
    return []


def snakemake_records(workdir: str | Path = ".") -> dict[str, dict]:
    """{output path: Snakemake's record of the job that wrote it} from .snakemake/metadata."""
    folder = Path(workdir) / SNAKEMAKE_RECORDS
    records = {}
    for path in folder.rglob("*") if folder.is_dir() else ():
        if not path.is_file():
            continue
        name = "".join(path.relative_to(folder).parts)  # long names are split into folders
        try:
            output = base64.urlsafe_b64decode(name.encode()).decode()
            records[output] = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            continue
    return records


def lineage(tables: list[str], records: dict[str, dict]) -> dict[str, dict]:
    """For each table: the rule that wrote it, its inputs and when it finished (None where
    Snakemake holds no record, e.g. a table written outside the workflow)."""
    out = {}
    for table in tables:
        record = records.get(table)
        out[table] = None if record is None else {
            "rule": record.get("rule"), "inputs": record.get("input", []), "finished": record.get("endtime")}
    return out


def build_manifest(config: dict, prepared: dict[str, str], shards: dict[str, dict], results: str | Path = "results",
                   workdir: str | Path = ".") -> dict:
    """The manifest: `prepared` {dataset: prepared table path}, `shards` {model: shard metadata}."""
    tables = sorted(str(path) for path in Path(results).rglob("*")
                    if path.suffix in TABLE_SUFFIXES and "activations" not in path.parts)
    return {
        "workflow": workflow_commit(),
        "packages": package_versions(),
        "config": config,
        "data": {dataset: read_prepared_record(path).get("raw_files") for dataset, path in sorted(prepared.items())},
        "models": {model: {"id": metadata.get("model_id"), "source": metadata.get("source"),
                           "revision": metadata.get("revision") or None, "commit": metadata.get("commit") or None,
                           "quantisation": metadata.get("quantisation") or None, "dtype": metadata.get("dtype"),
                           "weights": metadata.get("weights"),
                           "files": model_files(metadata, config["models"][model])}
                   for model, metadata in sorted(shards.items())},
        "tables": lineage(tables, snakemake_records(workdir)),
    }
