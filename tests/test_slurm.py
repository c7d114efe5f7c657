"""The workflow through a real single-node SLURM with workflow/profiles/slurm.

scripts/slurm_local.sh installs (apt-get, as root) and starts munged, slurmctld and slurmd on
this machine; the test then runs simulate -> dataset -> one training run -> its validation with
`snakemake --profile workflow/profiles/slurm`, checks that every job went through sbatch and
that SLURM ran it with the rule's resources, and that the outputs equal those of a local run of
the same targets bit for bit (timestamps, timings and the run's directory aside). It skips only
where SLURM cannot be had: not root, no apt-get, or the packages fail to install.
"""

import csv
import io
import json
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import pytest
from test_workflow import ROOT, snakemake

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SCRIPT = ROOT / "scripts" / "slurm_local.sh"
PROFILE = ROOT / "workflow" / "profiles" / "slurm"
UNAVAILABLE = 3  # slurm_local.sh's exit status when SLURM cannot be had here
RUN = "pair-joint-nall"
TARGET = f"results/validate/{RUN}/metrics.json"
EXPECTED_JOBS = {"simulate": 3, "dataset": 1, "train": 1, "validate_model": 1}
# sbatch -t from each rule's `runtime` (minutes), as scontrol prints it.
TIME_LIMITS = {"simulate": "02:00:00", "dataset": "00:30:00", "train": "04:00:00",
               "validate_model": "00:30:00"}
# sbatch --mem from each rule's mem_mb.
MEM_MB = {"simulate": 1000, "dataset": 4000, "train": 6000, "validate_model": 6000}
# What may differ between two runs of the same job: when and how fast it ran, and the state of
# the source tree (provenance.git_commit, "<hash>-dirty" while the tree has edits).
IGNORED_KEYS = {"created_utc", "wall_s", "train_s", "frames_per_s", "git_commit"}
SUBMITTED = re.compile(
    r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.")


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout,
                          check=False)


@pytest.fixture(scope="module")
def slurm():
    """A running single-node SLURM; stopped afterwards if this test started it."""
    if shutil.which("bash") is None:
        pytest.skip("SLURM test needs bash (scripts/slurm_local.sh)")
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        pytest.fail("snakemake-executor-plugin-slurm is missing: pip install -e '.[test]'")
    was_up = (shutil.which("scontrol") is not None
              and "is UP" in _run("scontrol", "ping").stdout)
    start = _run("bash", str(SCRIPT), "start", timeout=900)
    if start.returncode == UNAVAILABLE:
        pytest.skip(f"no SLURM on this machine: {start.stderr.strip().splitlines()[-1]}")
    assert start.returncode == 0, f"scripts/slurm_local.sh failed:\n{start.stderr[-4000:]}"
    yield
    if not was_up:
        _run("bash", str(SCRIPT), "stop")


def _node_memory_mb() -> int:
    out = _run("sinfo", "-h", "-N", "-o", "%m").stdout.split()
    return int(out[0]) if out else 0


def _normalise(value, workdir: str):
    """JSON-like value without the keys that may differ, with the run's directory elided."""
    if isinstance(value, dict):
        return {k: _normalise(v, workdir) for k, v in value.items() if k not in IGNORED_KEYS}
    if isinstance(value, list):
        return [_normalise(v, workdir) for v in value]
    if isinstance(value, str):
        for form in (str(Path(workdir).resolve()), workdir):
            value = value.replace(form, "<workdir>")
        return value
    return value


def _json_text(text: str, workdir: Path) -> str:
    # Dumping both sides compares floats by their shortest repr: equal text, equal bits.
    return json.dumps(_normalise(json.loads(text), str(workdir)), sort_keys=True)


def _h5_contents(path: Path, workdir: Path) -> dict[str, bytes | str]:
    """Every dataset's dtype, shape and bytes and every attribute, JSON attributes normalised."""
    out: dict[str, bytes | str] = {}

    def attrs(name, obj):
        for key, value in obj.attrs.items():
            if isinstance(value, bytes):
                value = value.decode()
            if isinstance(value, str) and value.lstrip().startswith(("{", "[")):
                out[f"{name}@{key}"] = _json_text(value, workdir)
            else:
                array = np.asarray(value)
                out[f"{name}@{key}"] = f"{array.dtype}{array.shape}".encode() + array.tobytes()

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            array = np.asarray(obj[()])
            out[name] = f"{array.dtype}{array.shape}".encode() + array.tobytes()
        attrs(name, obj)

    with h5py.File(path, "r") as handle:
        attrs("/", handle)
        handle.visititems(visit)
    return out


def _msgpack_contents(path: Path) -> dict[str, bytes]:
    """Every array of a flax msgpack file (model weights, checkpoint state) as dtype + bytes."""
    import flax.serialization

    out: dict[str, bytes] = {}

    def walk(value, name):
        if isinstance(value, dict):
            for key, item in value.items():
                if key not in IGNORED_KEYS:
                    walk(item, f"{name}/{key}")
        else:
            array = np.asarray(value)
            out[name] = f"{array.dtype}{array.shape}".encode() + array.tobytes()

    walk(flax.serialization.msgpack_restore(path.read_bytes()), "")
    return out


def _csv_rows(path: Path) -> list[dict[str, str]]:
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    return [{k: v for k, v in row.items() if k not in IGNORED_KEYS} for row in rows]


def _outputs(workdir: Path) -> list[Path]:
    results = workdir / "results"
    return sorted(p.relative_to(workdir) for p in results.rglob("*")
                  if p.is_file() and p.relative_to(results).parts[0] not in ("logs", "benchmarks"))


def _assert_same_outputs(slurm_dir: Path, local_dir: Path) -> None:
    files = _outputs(slurm_dir)
    assert files == _outputs(local_dir)
    compared = {".h5": 0, ".json": 0, ".csv": 0, ".msgpack": 0, "bytes": 0}
    for rel in files:
        a, b = slurm_dir / rel, local_dir / rel
        if rel.suffix == ".h5":
            ha, hb = _h5_contents(a, slurm_dir), _h5_contents(b, local_dir)
            assert ha.keys() == hb.keys(), rel
            differ = sorted(k for k in ha if ha[k] != hb[k])
            assert not differ, f"{rel}: {differ} differ between the SLURM and the local run"
        elif rel.suffix == ".json":
            assert _json_text(a.read_text(), slurm_dir) == _json_text(b.read_text(), local_dir), rel
        elif rel.suffix == ".csv":
            assert _csv_rows(a) == _csv_rows(b), rel
        elif rel.suffix == ".msgpack":
            assert _msgpack_contents(a) == _msgpack_contents(b), rel
        else:
            assert a.read_bytes() == b.read_bytes(), rel
        compared[rel.suffix if rel.suffix in compared else "bytes"] += 1
    # 3 replicas + 3 splits; stats, final metrics, validation metrics, ...; weights, checkpoint
    assert compared[".h5"] == 6 and compared[".json"] >= 4 and compared[".msgpack"] == 2, compared


def test_workflow_through_slurm_matches_local_run(slurm, tmp_path):
    slurm_dir, local_dir = tmp_path / "slurm", tmp_path / "local"
    extra = []
    node_mem = _node_memory_mb()
    if node_mem < max(MEM_MB.values()):
        # A small CI machine: SLURM would reject jobs asking more memory than the node has.
        cap = max(node_mem - 200, 500)
        extra = ["--set-resources", *(f"{rule}:mem_mb={cap}" for rule in EXPECTED_JOBS)]

    # The local run of the same targets goes alongside: it takes a fraction of the SLURM run's
    # time (mostly sbatch overhead and status polling), and both see the same source tree.
    with ThreadPoolExecutor(max_workers=1) as pool:
        local_run = pool.submit(snakemake, local_dir, "--cores", "1", TARGET)
        result = snakemake(
            slurm_dir, "--profile", str(PROFILE), TARGET, *extra,
            # A local cluster without accounting: job states from squeue (MinJobAge=3600 keeps
            # finished jobs listed), a first status query after 1 s, and the SLURM logs kept.
            "--slurm-status-command", "squeue",
            "--slurm-init-seconds-before-status-checks", "1",
            "--slurm-keep-successful-logs",
        )
        local = local_run.result()
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]

    # Every job was submitted with sbatch, once: as many submissions as the DAG has jobs.
    submissions = SUBMITTED.findall(log)
    total = re.search(r"^total\s+(\d+)\s*$", log, re.MULTILINE)
    assert total, log[-3000:]
    assert len(submissions) == int(total.group(1)) == sum(EXPECTED_JOBS.values()), log[-6000:]
    assert len({job for job, _, _ in submissions}) == len(submissions)

    rules: dict[str, int] = {}
    for _, slurm_id, log_path in submissions:
        # SLURM still knows the job (MinJobAge=3600): completed, with the rule's resources.
        info = _run("scontrol", "show", "job", slurm_id).stdout
        assert "JobState=COMPLETED" in info and "ExitCode=0:0" in info, info
        rule = re.search(r"Comment=rule_(\w+?)(?:_wildcards_\S*)?\s", info).group(1)
        rules[rule] = rules.get(rule, 0) + 1
        assert f"TimeLimit={TIME_LIMITS[rule]}" in info, info
        assert "CPUs/Task=1" in info, info
        if not extra:
            assert f"MinMemoryNode={MEM_MB[rule]}M" in info, info
        # The job's SLURM log (written by slurmstepd under .snakemake/slurm_logs/rule_<rule>/)
        # holds the Snakemake that ran inside the allocation, with the slurm-jobstep executor.
        path = Path(log_path)
        assert path.is_file(), path
        assert path.is_relative_to(
            slurm_dir.resolve() / ".snakemake" / "slurm_logs" / f"rule_{rule}"), path
        assert path.stem == slurm_id
        job_log = path.read_text()
        assert "--executor slurm-jobstep" in job_log and f"rule {rule}:" in job_log, job_log
    assert rules == EXPECTED_JOBS

    assert local.returncode == 0, (local.stdout + local.stderr)[-4000:]
    assert not SUBMITTED.search(local.stdout + local.stderr)
    _assert_same_outputs(slurm_dir, local_dir)
