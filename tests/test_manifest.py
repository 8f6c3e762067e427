"""The provenance manifest follows the data: a raw file whose bytes change (with its pinned
sha256 updated) reruns the workflow and changes the manifest's record of it."""

from __future__ import annotations

import json

import numpy as np
import polars as pl

from emoprobe.data.sources import sha256_of

from .conftest import REPO, job_counts, make_tiny_model, run_snakemake


def _write_dataset(path, first_text: str) -> None:
    rng = np.random.default_rng(2)
    vocabulary = (REPO / "tests" / "fixtures" / "vocabulary.txt").read_text().split()[40:200]
    rows = [(" ".join(rng.choice(vocabulary, 6)), label) for label in ("good", "bad", "happy") for _ in range(8)]
    rows[0] = (first_text, rows[0][1])
    pl.DataFrame(rows, schema=["text", "emotion"], orient="row").write_csv(path)


def test_manifest_records_the_data_file_it_was_run_on(tmp_path):
    model = make_tiny_model(tmp_path / "tiny", "llama", n_layers=2)
    data = tmp_path / "words.csv"
    _write_dataset(data, "the first text")
    config = {"models": {"tiny": {"source": "local", "path": str(model)}},
              "datasets": {"words": {"type": "custom", "path": str(data), "label_column": "emotion",
                                     "sha256": sha256_of(data)}},
              "positions": [-1], "layers": [1, 2], "probe": {"cv_folds": 2}, "lexical_baseline": False}
    workdir = tmp_path / "run"
    assert (result := run_snakemake(workdir, config)).returncode == 0, result.stderr[-3000:]
    manifest_path = workdir / "results" / "report" / "provenance.json"
    before = json.loads(manifest_path.read_text())
    assert before["data"] == {"words": [{"path": str(data), "sha256": sha256_of(data)}]}
    assert before["config"]["datasets"]["words"]["sha256"] == sha256_of(data)

    _write_dataset(data, "the first text, edited")
    config["datasets"]["words"]["sha256"] = sha256_of(data)
    result = run_snakemake(workdir, config)
    assert result.returncode == 0, result.stderr[-3000:]
    assert job_counts(result.stdout + result.stderr)["prepare_dataset"] == 1
    after = json.loads(manifest_path.read_text())
    assert after["data"] == {"words": [{"path": str(data), "sha256": sha256_of(data)}]}
    assert after["data"] != before["data"]
    for table in ("results/data/words.parquet", "results/metrics/probe_metrics.parquet"):
        assert after["tables"][table]["finished"] > before["tables"][table]["finished"]
    methods = (workdir / "results" / "report" / "methods.md").read_text()
    assert f"(sha256 {sha256_of(data)})" in methods
