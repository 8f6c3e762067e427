"""Code fingerprints per workflow stage, passed to rules as a `code` param.

Snakemake's `code` rerun trigger only sees the (two-line) script a rule runs, not the
package it imports. Each rule therefore carries a fingerprint of exactly the code its
results depend on: the modules of its stage plus the source of its job function. Editing
extraction code reruns extraction (and, through the changed shards, everything after it);
editing plotting code reruns only the report; editing a docstring elsewhere reruns nothing.
"""

from __future__ import annotations

import hashlib
import inspect
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent

# stage -> (job function in emoprobe.jobs, package files whose code shapes its outputs)
STAGES = {
    "prepare": ("prepare_dataset", ["data/*.py"]),
    "extract": ("extract_activations", ["extract.py", "shards.py", "models.py"]),
    "probe": ("fit_probe", ["probes.py", "shards.py"]),
    "aggregate": ("aggregate_metrics", ["aggregate.py"]),
    "report": ("build_report", ["report.py", "aggregate.py"]),
}


def code_fingerprint(stage: str) -> str:
    """A short sha256 over the stage's modules and its job function's source."""
    from . import jobs

    function, patterns = STAGES[stage]
    digest = hashlib.sha256(inspect.getsource(getattr(jobs, function)).encode())
    for pattern in patterns:
        for path in sorted(PACKAGE.glob(pattern)):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]
