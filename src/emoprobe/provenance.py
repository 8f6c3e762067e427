"""Code fingerprints per workflow stage, passed to rules as a `code` param.

Snakemake's `code` rerun trigger only sees the (two-line) script a rule runs, not the
package it imports. Each rule therefore carries a fingerprint of exactly the code its
results depend on: the modules of its stage plus the source of its job function (and of the
helpers in emoprobe.jobs that it calls, such as the shard reading both probe kinds share). Editing
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
    # regression.py: official_split_folds (the train + dev / test folds of both probe kinds).
    "probe": ("fit_probe", ["probes.py", "shards.py", "regression.py"]),
    # Not probes.py: regression.py takes only the column schema PROBE_COLUMNS from it, and the
    # logistic probes' code (e.g. its torch backend) must not rerun the ridge probes.
    "ridge": ("fit_ridge", ["regression.py", "shards.py", "data/prepare.py"]),
    "aggregate": ("aggregate_metrics", ["aggregate.py"]),
    "report": ("build_report", ["report.py", "aggregate.py"]),
}


def code_fingerprint(stage: str) -> str:
    """A short sha256 over the stage's modules and its job function's source."""
    from . import jobs

    function, patterns = STAGES[stage]
    digest = hashlib.sha256()
    for helper in _job_functions(jobs, function):
        digest.update(inspect.getsource(helper).encode())
    for pattern in patterns:
        for path in sorted(PACKAGE.glob(pattern)):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _job_functions(jobs, name: str) -> list:
    """The job function `name`, then the functions of emoprobe.jobs it calls, recursively."""
    found, pending = [], [name]
    while pending:
        function = getattr(jobs, pending.pop(0))
        if function in found:
            continue
        found.append(function)
        pending += [called for called in function.__code__.co_names
                    if inspect.isfunction(getattr(jobs, called, None))
                    and getattr(jobs, called).__module__ == jobs.__name__]
    return found
