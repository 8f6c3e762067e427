"""Code fingerprints per workflow stage, passed to rules as a `code` param.

Snakemake's `code` rerun trigger only sees the (two-line) script a rule runs, not the
package it imports. Each rule therefore carries a fingerprint of exactly the code its
results depend on: the source of its job function and of the helpers in emoprobe.jobs that
it calls, plus every package module those functions import, followed through the modules'
own imports. The module lists are derived from the code, never kept by hand, so they cannot
drift: editing extraction code reruns extraction (and, through the changed shards,
everything after it); editing plotting code reruns only the report.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent

# stage -> its job function in emoprobe.jobs
STAGES = {
    "prepare": "prepare_dataset",
    "extract": "extract_activations",
    "probe": "fit_probe",
    "ridge": "fit_ridge",
    "directions": "save_directions",
    "lexical": "lexical_baseline",
    "answers": "collect_answers",
    "answer_scores": "score_answers",
    "compare": "compare_with_lexical",
    "aggregate": "aggregate_metrics",
    "report": "build_report",
    "provenance": "write_provenance",
    "causal": "causal_experiment",
    "causal_aggregate": "aggregate_causal",
    "geometry": "probe_geometry",
    "geometry_aggregate": "aggregate_geometry",
    "transfer": "transfer_probe",
    "transfer_aggregate": "aggregate_transfer",
}


def code_fingerprint(stage: str) -> str:
    """A short sha256 over the stage's job functions' source and the modules they import."""
    from . import jobs

    functions = _job_functions(jobs, STAGES[stage])
    digest = hashlib.sha256()
    for function in functions:
        digest.update(inspect.getsource(function).encode())
    for path in stage_modules(functions):
        digest.update(str(path.relative_to(PACKAGE)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def stage_modules(functions) -> list[Path]:
    """The package modules the functions import (relative imports anywhere in their source),
    and the modules those import in turn, sorted; jobs.py itself is covered by the functions."""
    jobs_file = Path(inspect.getfile(functions[0]))
    found: set[Path] = set()
    pending = [path for function in functions
               for path in _imported(ast.parse(inspect.getsource(function).strip()), jobs_file)]
    while pending:
        path = pending.pop()
        if path in found or path == jobs_file:
            continue
        found.add(path)
        pending += _imported(ast.parse(path.read_text(encoding="utf-8")), path)
    return sorted(found)


def _imported(tree: ast.AST, importer: Path) -> list[Path]:
    """Files of the package modules a module's relative imports name (`from .x import y`,
    `from . import x`, `from ..x import y`)."""
    paths = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or not node.level:
            continue
        base = importer.parent
        for _ in range(node.level - 1):
            base = base.parent
        target = base.joinpath(*node.module.split(".")) if node.module else base
        candidates = [target.with_suffix(".py"), target / "__init__.py"]
        candidates += [target / f"{alias.name}.py" for alias in node.names]  # `from .data import custom`
        paths += [path for path in candidates if path.is_file()]
    return paths


def _job_functions(jobs, name: str) -> list:
    """The job function `name`, then the functions of emoprobe.jobs it calls, recursively."""
    found, pending = [], [name]
    while pending:
        function = getattr(jobs, pending.pop(0))
        if function in found:
            continue
        found.append(function)
        pending += [called for called in _names(function.__code__)
                    if inspect.isfunction(getattr(jobs, called, None))
                    and getattr(jobs, called).__module__ == jobs.__name__]
    return found


def _names(code) -> list[str]:
    """The global names a code object uses, with those of the code nested in it (comprehensions,
    lambdas, inner functions: their own code objects before Python 3.12)."""
    return [*code.co_names, *(name for const in code.co_consts if inspect.iscode(const) for name in _names(const))]
