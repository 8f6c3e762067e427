"""Stage fingerprints follow the code each job imports, so no module can be left out by hand."""

from __future__ import annotations

import pytest

from emoprobe import jobs, provenance

STAGES = set(provenance.STAGES)


def stages_importing(module: str) -> set[str]:
    """The stages whose fingerprint covers `module` (a path inside src/emoprobe)."""
    return {stage for stage, function in provenance.STAGES.items()
            if provenance.PACKAGE / module in provenance.stage_modules(provenance._job_functions(jobs, function))}


@pytest.mark.parametrize(("module", "stages"), [
    # parse_positions (parts.py) and sha256_of (data/sources.py) shape every job reading shards
    ("parts.py", {"probe", "ridge", "directions"}),
    # report, provenance: the prepared tables' record of the raw files read
    ("data/sources.py", {"prepare", "extract", "probe", "ridge", "directions", "lexical", "compare", "answer_scores",
                         "causal", "geometry", "transfer", "report", "provenance"}),
    # every probe's folds, the baseline's too; causal: steering's ridge directions
    ("folds.py", {"probe", "ridge", "directions", "lexical", "causal", "transfer"}),
    # report: the sites, and with provenance the shards' metadata; transfer: its shards are read in a
    # comprehension (a nested code object)
    ("shards.py", {"extract", "probe", "ridge", "directions", "answer_scores", "report", "causal", "transfer",
                   "provenance"}),
    ("extract.py", {"extract", "causal"}),  # the causal edits hook the sites extraction reads
    ("models.py", {"extract", "causal"}),
    ("interventions/runner.py", {"causal"}),
    ("interventions/plan.py", {"causal", "report"}),  # report: the ablation kinds' order
    ("probes.py", {"probe", "directions", "transfer"}),  # the classification probes never rerun ridge or the baseline
    ("mlp.py", {"probe", "directions", "transfer"}),
    ("controls.py", {"probe"}),
    ("lexical.py", {"lexical"}),
    ("compare.py", {"compare", "aggregate", "report"}),
    ("regression.py", {"ridge", "lexical", "causal"}),  # the baseline's ridge shares the penalty search; steering
    # through data/prepare.py: target names, and the correct_only subset's class checks
    ("data/isear.py", {"prepare", "ridge", "lexical", "compare", "probe", "directions", "answer_scores", "geometry",
                       "transfer"}),
    ("data/label_maps.py", {"transfer"}),  # a label map never reruns the preparation
    ("geometry.py", {"geometry", "causal"}),  # causal: promotion's unit directions
    ("transfer.py", {"transfer"}),
    ("answers.py", {"extract"}),  # label words: read in the extraction pass
    ("answer_metrics.py", {"answer_scores", "report"}),  # scoring the answers never reruns extraction
    ("subset.py", {"probe", "ridge", "directions", "answer_scores"}),  # never the preparation of a dataset
    ("aggregate.py", {"aggregate", "report"}),
    ("report.py", {"report"}),
    ("figures.py", {"report"}),
    ("methods.py", {"report"}),
    ("manifest.py", {"report", "provenance"}),  # report: the methods' versions and commit
    # these only copy and concatenate files
    ("errors.py", STAGES - {"answers", "causal_aggregate", "geometry_aggregate", "transfer_aggregate"}),
])
def test_each_module_reaches_the_stages_that_import_it(module, stages):
    assert stages_importing(module) == stages


def test_an_edit_to_an_imported_module_changes_the_fingerprint(monkeypatch):
    """parts.py is imported only inside a helper of the probe jobs; editing it must still count."""
    parts = provenance.PACKAGE / "parts.py"
    before = {stage: provenance.code_fingerprint(stage) for stage in STAGES}
    original = type(parts).read_bytes
    monkeypatch.setattr(type(parts), "read_bytes",
                        lambda self: original(self) + (b"# edited" if self == parts else b""))
    after = {stage: provenance.code_fingerprint(stage) for stage in STAGES}
    assert {stage for stage in STAGES if before[stage] != after[stage]} == {"probe", "ridge", "directions"}
