"""The workflow on a real one-node SLURM cluster, through snakemake-executor-plugin-slurm.

tests/slurm/local_cluster.sh installs (if needed) and starts Debian's Slurm + munge + slurmdbd
on this machine, or reuses a running one. The workflow then runs end to end with
`--executor slurm` and the project's profile (profiles/slurm) on a tiny random Llama, and
the test checks that every job went through sbatch (sacct, and the executor's own log),
that the probes were batched into group jobs, that extraction asked for a GPU, and that
the metrics equal a local run's. Every step has a time limit: a cluster that misbehaves
fails the test instead of hanging it.

Needs root (it installs packages and starts daemons); skipped otherwise, or when the Slurm
packages cannot be installed. Deselect with `-m "not slurm"`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
import yaml

from .conftest import REPO, SHARED_DATA, SNAKEMAKE, crowd_envent_path, job_counts, make_tiny_model, run_snakemake


CLUSTER_SCRIPT = REPO / "tests" / "slurm" / "local_cluster.sh"
PROFILE = REPO / "profiles" / "slurm"
# First use installs the Debian packages (a minute or two); a running cluster is reused in ~2 s.
SETUP_TIMEOUT = int(os.environ.get("EMOPROBE_SLURM_SETUP_TIMEOUT", "900"))
# The end-to-end run takes about 100 s on a busy 2-core machine.
RUN_TIMEOUT = int(os.environ.get("EMOPROBE_SLURM_RUN_TIMEOUT", "300"))
# Overrides for a 2-CPU node and a quick test: the profile's 8 cores would never be scheduled,
# and its 20 s wait before the first status check would dominate the run.
TEST_OVERRIDES = ("--cores", "2", "--slurm-init-seconds-before-status-checks", "1",
                  "--seconds-between-status-checks", "1", "--latency-wait", "10")


def slurm_config(model_dir: Path) -> dict:
    return {
        "data_dir": str(SHARED_DATA),
        "positions": [-1],
        "probe": {"cv_folds": 2, "mem_mb": 1000, "runtime": 5},
        "extraction": {"mem_mb": 2000, "runtime": 10},
        "models": {"tiny-llama": {"source": "local", "path": str(model_dir)}},
        "datasets": {"crowd_envent": {"type": "crowd_envent", "max_per_class": 4}},
    }


def _slurm(*command: str, timeout: int = 20) -> str:
    """Run a Slurm client command; never waits more than `timeout` seconds."""
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except (subprocess.TimeoutExpired, FileNotFoundError) as error:
        return f"<{' '.join(command)}: {error}>"
    return result.stdout + (f"<stderr: {result.stderr.strip()}>" if result.returncode else "")


def cluster_state() -> str:
    """What a failure message needs to explain a stuck or failed run."""
    log = Path("/var/log/slurm/slurmctld.log")
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:]) if log.exists() else ""
    return (f"squeue:\n{_slurm('squeue', '-o', '%i %j %T %r %C %m')}\n"
            f"sinfo:\n{_slurm('sinfo', '-N', '-o', '%N %T %C %m %G %E')}\nslurmctld.log (tail):\n{tail}")


@dataclass
class SlurmRun:
    result: subprocess.CompletedProcess
    seconds: float
    since: datetime
    jobname_prefix: str
    stuck: str = ""  # squeue lines of this run's jobs still queued when snakemake had exited
    output: str = field(init=False)

    def __post_init__(self):
        self.output = self.result.stdout + self.result.stderr

    @property
    def timed_out(self) -> bool:
        return self.result.returncode in (124, 137)

    @property
    def run_id(self) -> str:
        match = re.search(r"SLURM run ID: (\S+)", self.output)
        assert match, f"no SLURM run ID in the output:\n{self.output[-3000:]}"
        return match.group(1)

    def submissions(self) -> dict[str, str]:
        """SLURM job id -> SLURM log path, from the executor's 'has been submitted' lines."""
        return dict(re.findall(r"has been submitted with SLURM jobid (\d+) \(log: (\S+?)\)\.?$",
                               self.output, flags=re.M))

    def sacct(self) -> list[dict[str, str]]:
        """Accounting records of this run's jobs (the job name is the executor's run id)."""
        fields = ["JobIDRaw", "JobName", "State", "AllocTRES", "Timelimit", "Comment"]
        text = _slurm("sacct", "-X", "-n", "-P", "--name", self.run_id, "-o", ",".join(fields),
                      "-S", f"{self.since:%Y-%m-%dT%H:%M:%S}")
        return [dict(zip(fields, line.split("|"))) for line in text.splitlines() if line.strip()]


def run_on_slurm(workdir: Path, config: dict, *args: str, timeout: int = RUN_TIMEOUT) -> SlurmRun:
    """Run the workflow with `--executor slurm` and profiles/slurm, bounded by `timeout` seconds.

    Snakemake gets SIGINT at the limit (it then cancels its SLURM jobs), SIGKILL 30 s later;
    whatever this run left in the queue is cancelled here in any case.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    prefix = f"emoprobetest{uuid.uuid4().hex[:8]}"
    command = ["timeout", "-s", "INT", "-k", "30", str(timeout),
               SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--configfile", str(config_path),
               "--replace-workflow-config", "--workflow-profile", str(PROFILE), "--executor", "slurm",
               "--slurm-jobname-prefix", prefix, *TEST_OVERRIDES, *args]
    since = datetime.now() - timedelta(minutes=1)
    start = time.monotonic()
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout + 60, cwd=workdir)
    except subprocess.TimeoutExpired as error:  # only if `timeout` itself failed us
        result = subprocess.CompletedProcess(command, 137, error.stdout or "", error.stderr or "")
    finally:
        mine = [line.split() for line in _slurm("squeue", "-h", "-o", "%i %j %T %r").splitlines()]
        mine = [fields for fields in mine if len(fields) >= 2 and fields[1].startswith(prefix)]
        stuck = "\n".join(" ".join(fields) for fields in mine)
        for fields in mine:
            _slurm("scancel", fields[0])
    return SlurmRun(result, time.monotonic() - start, since, prefix, stuck)


def job_kind(log: str) -> str:
    """'rule_<rule>' or 'group_<group>_<rules>': the first folder under the profile's slurm-logdir."""
    return log.split("/results/logs/slurm/", 1)[1].split("/")[0]


def assert_succeeded(run: SlurmRun) -> None:
    if run.timed_out:
        pytest.fail(f"the SLURM run timed out after {run.seconds:.0f} s (jobs still queued: {run.stuck or 'none'})"
                    f"\n{cluster_state()}\n--- snakemake output (tail) ---\n{run.output[-4000:]}")
    assert run.result.returncode == 0, f"{run.output[-5000:]}\n{cluster_state()}"


@pytest.fixture(scope="module")
def slurm_cluster():
    """Start the local cluster (or reuse a running one); stop it afterwards only if we started it."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("SLURM tests need root: they install Debian's slurm/munge packages and start the daemons")
    if shutil.which("dpkg-query") is None:
        pytest.skip("SLURM tests need a Debian-based system (dpkg/apt) for the Slurm packages")
    try:
        setup = subprocess.run(["bash", str(CLUSTER_SCRIPT), "start"], capture_output=True, text=True,
                               timeout=SETUP_TIMEOUT,
                               env={**os.environ, "SLURM_ACCOUNTING": "1", "FAKE_GPUS": "1"})
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"local SLURM cluster not up within {SETUP_TIMEOUT} s:\n{error.stdout}\n{error.stderr}")
    log = setup.stdout + setup.stderr
    if setup.returncode == 3:
        pytest.skip(f"Slurm packages cannot be installed or started here: {log.strip().splitlines()[-1]}")
    if setup.returncode != 0:
        pytest.fail(f"local SLURM cluster did not come up (exit {setup.returncode}):\n{log}\n{cluster_state()}")
    yield log
    if "reusing running" not in log and os.environ.get("EMOPROBE_SLURM_KEEP") != "1":
        subprocess.run(["bash", str(CLUSTER_SCRIPT), "stop"], capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    crowd_envent_path()
    return make_tiny_model(tmp_path_factory.mktemp("slurm_model") / "tiny-llama", "llama")


@pytest.fixture(scope="module")
def runs(slurm_cluster, tiny_model, tmp_path_factory):
    """The same tiny sweep run locally and on SLURM (the local run goes alongside: SLURM mostly waits)."""
    root = tmp_path_factory.mktemp("slurm")
    config = slurm_config(tiny_model)
    (root / "local").mkdir()
    (root / "local" / "config.yaml").write_text(yaml.safe_dump(config))
    local = subprocess.Popen(
        [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(root / "local"), "--configfile",
         str(root / "local" / "config.yaml"), "--replace-workflow-config", "--cores", "2"],
        cwd=root / "local", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        slurm = run_on_slurm(root / "slurm", config)
        local_output, _ = local.communicate(timeout=RUN_TIMEOUT)
    finally:
        if local.poll() is None:
            local.kill()
            local.wait()
    assert local.returncode == 0, local_output[-4000:]
    return {"root": root, "config": config, "slurm": slurm, "local": root / "local"}


@pytest.mark.slurm
def test_every_job_went_through_sbatch_and_probes_were_batched(runs):
    run = runs["slurm"]
    assert_succeeded(run)
    submitted = run.submissions()
    records = {row["JobIDRaw"]: row for row in run.sacct()}
    assert submitted and set(records) == set(submitted), (submitted, records)
    assert {row["State"] for row in records.values()} == {"COMPLETED"}, records

    planned = job_counts(run.output)
    assert planned["fit_probe"] == 4  # layers 0..3 x position -1
    kinds = sorted(job_kind(log) for log in submitted.values())
    # ONE SLURM job for the four probes, one for metrics + report, one per prepare and extraction
    assert kinds.count("group_probes_fit_probe") == 1 and "rule_fit_probe" not in kinds, kinds
    assert kinds.count("group_summary_aggregate_metrics_build_report") == 1, kinds
    assert kinds.count("rule_extract_activations") == 1 and kinds.count("rule_prepare_dataset") == 1, kinds
    assert "rule_collect_answers" not in kinds and "rule_score_answers" not in kinds  # local rules
    assert len(submitted) < sum(planned.values()) - planned["all"]  # 4 SLURM jobs for 10 Snakemake jobs


@pytest.mark.slurm
def test_extraction_asked_for_a_gpu_and_probes_did_not(runs):
    run = runs["slurm"]
    assert_succeeded(run)
    by_kind = {job_kind(log): job for job, log in run.submissions().items()}
    records = {row["JobIDRaw"]: row for row in run.sacct()}
    assert "gres/gpu=1" in records[by_kind["rule_extract_activations"]]["AllocTRES"], records
    assert "gres/gpu" not in records[by_kind["group_probes_fit_probe"]]["AllocTRES"], records
    # memory and time per rule: extraction takes them from the config's extraction section ...
    extraction = records[by_kind["rule_extract_activations"]]
    assert "mem=2000M" in extraction["AllocTRES"] and extraction["Timelimit"] == "00:10:00", extraction
    # ... and the probe batch runs its 4 single-threaded probes 2 at a time (--cores 2):
    # 2 CPUs, 2 x probe.mem_mb (1000), 2 x probe.runtime (5 min)
    probes = records[by_kind["group_probes_fit_probe"]]
    assert "cpu=2" in probes["AllocTRES"] and "mem=2000M" in probes["AllocTRES"], probes
    assert probes["Timelimit"] == "00:10:00", probes


@pytest.mark.slurm
def test_each_slurm_job_kept_its_own_log(runs):
    run = runs["slurm"]
    assert_succeeded(run)
    for job, log in run.submissions().items():
        path = Path(log)
        assert path.is_relative_to(runs["root"] / "slurm" / "results" / "logs" / "slurm"), path
        assert path.name == f"{job}.log" and path.exists(), path
    probe_log = next(Path(log) for log in run.submissions().values() if "group_probes" in log)
    assert "fit_probe" in probe_log.read_text()


@pytest.mark.slurm
def test_slurm_metrics_equal_the_local_run(runs):
    assert_succeeded(runs["slurm"])
    keys = ["model", "dataset", "layer", "site", "position", "probe", "metric"]
    local = pl.read_parquet(runs["local"] / "results" / "metrics" / "probe_metrics.parquet").sort(keys)
    slurm = pl.read_parquet(runs["root"] / "slurm" / "results" / "metrics" / "probe_metrics.parquet").sort(keys)
    assert slurm.select(keys).equals(local.select(keys))
    assert slurm["mean"].to_list() == pytest.approx(local["mean"].to_list(), abs=1e-9)
    assert slurm["n_folds"].to_list() == local["n_folds"].to_list()
    assert (runs["root"] / "slurm" / "results" / "report" / "index.html").exists()


@pytest.mark.slurm
def test_gres_style_from_a_site_profile(runs):
    """A site profile switching extraction to `--gres=gpu:1` (the other GPU style) is honoured."""
    assert_succeeded(runs["slurm"])
    site = runs["root"] / "site"
    site.mkdir()
    (site / "config.yaml").write_text(yaml.safe_dump(
        {"set-resources": {"extract_activations": {"gpu": 0, "gres": "gpu:1"}}}))
    run = run_on_slurm(runs["root"] / "slurm", runs["config"], "--profile", str(site), "--verbose",
                       "--forcerun", "extract_activations", "--until", "extract_activations")
    assert_succeeded(run)
    # (the sbatch comment names the rule; prepare_dataset may rerun too if its code changed meanwhile)
    calls = [line for line in run.output.splitlines()
             if "sbatch call:" in line and "--comment rule_extract_activations" in line]
    assert len(calls) == 1 and "--gres=gpu:1" in calls[0] and "--gpus" not in calls[0], calls
    (record,) = [row for row in run.sacct() if row["Comment"].startswith("rule_extract_activations")]
    assert record["State"] == "COMPLETED" and "gres/gpu=1" in record["AllocTRES"], record


@pytest.mark.slurm
def test_a_job_that_can_never_start_fails_the_run_instead_of_hanging(slurm_cluster, tiny_model, tmp_path):
    """3 CPUs on a 2-CPU node: SLURM keeps the job PENDING forever; the time limit ends the run."""
    config = slurm_config(tiny_model)
    limit = 25
    run = run_on_slurm(tmp_path / "run", config, "--set-threads", "prepare_dataset=3", "--cores", "3",
                       "--until", "prepare_dataset", timeout=limit)
    assert run.timed_out and run.result.returncode != 0, run.output[-3000:]
    assert run.seconds < limit + 40
    assert "has been submitted with SLURM jobid" in run.output
    # on SIGINT Snakemake cancels what it submitted: nothing of this run was left in the queue
    assert not run.stuck, f"jobs of the timed-out run were still queued: {run.stuck}"
    assert not (tmp_path / "run" / "results" / "data" / "crowd_envent.parquet").exists()


# --- no cluster needed: what the profiles ask for, seen in a dry run ------------------------------


def dry_run(tmp_path: Path, model: Path, *args: str) -> str:
    result = run_snakemake(tmp_path / "dry", slurm_config(model), "-n", "--workflow-profile", str(PROFILE),
                           *args, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


def job_block(output: str, rule: str) -> str:
    """The dry run's description of the first job of `rule`."""
    start = output.index(f"rule {rule}:")
    return output[start:output.index("Shell command", start)]


def test_profiles_batch_probes_and_send_extraction_to_a_gpu_partition(tiny_model, tmp_path):
    # (run_snakemake passes --cores 2; give the profile's own 8 back, else threads are capped at 2)
    output = dry_run(tmp_path, tiny_model, "--profile", str(PROFILE / "site-example"), "--cores", "8")
    assert "Group job probes" in output and "Group job summary" in output
    extraction = job_block(output, "extract_activations")
    assert "threads: 8" in extraction
    for resource in ("slurm_partition=gpu", "gpu=1", "gpu_model=a100", "slurm_account=my_project",
                     "mem_mb=2000", "runtime=10"):
        assert resource in extraction, extraction
    probe = job_block(output, "fit_probe")
    for resource in ("slurm_partition=cpu", "slurm_account=my_project", "mem_mb=1000", "runtime=5"):
        assert resource in probe, probe
    assert "gpu" not in probe.split("resources:")[1]


def test_a_retried_job_asks_for_more_memory_and_time(tiny_model, tmp_path):
    """profiles/slurm retries failed jobs; attempt 2 must ask for more than attempt 1."""
    first = job_block(dry_run(tmp_path, tiny_model), "fit_probe")
    second = job_block(dry_run(tmp_path, tiny_model, "--attempt", "2"), "fit_probe")
    assert "mem_mb=1000" in first and "runtime=5" in first
    assert "mem_mb=2000" in second and "runtime=10" in second
