"""Wall and CPU seconds of a workflow run, per rule and per job, from Snakemake's benchmark files.

Every rule writes `results/benchmarks/<rule...>/<job>.tsv` (`benchmark:` directive): wall
seconds (`s`) and CPU seconds (`cpu_time`, user + system of the job's processes). This script
sums them by stage and lists the costliest jobs, for BENCHMARKS.md's budget table:

    python benchmarks/workflow_budget.py [results/benchmarks] [--top 15] [--markdown]

The share of CPU in a stage says where a shorter run must come from; the lower bound on the
wall time of the whole run on C cores is (total CPU) / C.
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path


def read_benchmarks(root: Path) -> dict[str, tuple[float, float]]:
    """{job path relative to `root` without .tsv: (wall s, CPU s)} of every benchmark file."""
    jobs = {}
    for path in sorted(root.rglob("*.tsv")):
        with path.open() as handle:
            row = next(csv.DictReader(handle, delimiter="\t"))
        cpu = row.get("cpu_time", "")
        jobs[str(path.relative_to(root).with_suffix(""))] = (
            float(row["s"]), float(cpu) if cpu not in ("", "NA") else float("nan"))
    if not jobs:
        raise SystemExit(f"no benchmark files under {root}: run the workflow first")
    return jobs


def stage_of(job: str) -> str:
    """The stage a job belongs to: its benchmark file's first directory (or its name)."""
    first = job.split("/")[0]
    return "simulate" if first.startswith("replica") else first


def report(jobs: dict[str, tuple[float, float]], top: int, markdown: bool) -> str:
    stages: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    for job, (wall, cpu) in jobs.items():
        entry = stages[stage_of(job)]
        entry[0] += 1
        entry[1] += wall
        entry[2] += cpu
    total_cpu = sum(cpu for _, cpu in jobs.values())
    sep = " | " if markdown else "  "
    lines = [sep.join(["stage", "jobs", "wall s (sum)", "CPU s", "CPU share", "CPU s per job"])]
    if markdown:
        lines = ["| " + lines[0] + " |", "|---|---|---|---|---|---|"]
    for stage, (n, wall, cpu) in sorted(stages.items(), key=lambda kv: -kv[1][2]):
        cells = [stage, str(n), f"{wall:.0f}", f"{cpu:.0f}", f"{100 * cpu / total_cpu:.0f} %",
                 f"{cpu / n:.1f}"]
        lines.append(("| " + " | ".join(cells) + " |") if markdown else sep.join(cells))
    lines.append(f"total: {len(jobs)} jobs, {total_cpu:.0f} CPU s, at least "
                 f"{total_cpu / 2 / 60:.1f} min on 2 cores")
    lines.append("")
    lines.append(f"costliest {top} jobs (CPU s, wall s):")
    for job, (wall, cpu) in sorted(jobs.items(), key=lambda kv: -kv[1][1])[:top]:
        lines.append(f"  {job:45s} {cpu:8.1f} {wall:8.1f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", default="results/benchmarks", type=Path)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    print(report(read_benchmarks(args.root), args.top, args.markdown))


if __name__ == "__main__":
    main()
