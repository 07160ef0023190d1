"""Where the time of a finished workflow run went: reads the Snakemake `benchmark:` files of a run
(benchmarks/<run_name>/**.tsv) and prints, per rule and per model architecture, the number of jobs,
their summed wall time and CPU time, and each rule's share of the total.

    python bench/where_time_goes.py                       # the default run
    python bench/where_time_goes.py --config config/cpu_study.yaml

Wall seconds of jobs that ran side by side add up to more than the run's own wall time; CPU seconds
are the work done, whatever ran beside it.
"""

from __future__ import annotations

import argparse
import csv
import re
from collections import defaultdict
from pathlib import Path

from expe import config as C


def read(path: Path) -> dict[str, float]:
    with open(path) as f:
        row = next(csv.DictReader(f, delimiter="\t"))
    return {"wall": float(row["s"]), "cpu": float(row.get("cpu_time") or 0.0), "rss": float(row.get("max_rss") or 0.0)}


def architecture_of(config: dict, rel: str) -> str:
    """The architecture of the model a job's benchmark file names ('-' for jobs of no single model)."""
    entries = C.model_entries(config)
    for part in re.split(r"[/.]", rel):
        if part in entries:
            return entries[part]["architecture"]
    return "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--root", default=".", help="the folder the workflow ran in")
    args = ap.parse_args()
    config = C.load(args.config)
    folder = Path(args.root) / "benchmarks" / config["run_name"]
    files = sorted(folder.rglob("*.tsv"))
    if not files:
        raise SystemExit(f"no benchmark files under {folder}: run the workflow first")
    by_rule: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0, 0.0])
    by_arch: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    for p in files:
        rel = str(p.relative_to(folder))
        rule = rel.split("/")[0].removesuffix(".tsv")
        r = read(p)
        a = by_rule[rule]
        a[0] += 1
        a[1] += r["wall"]
        a[2] += r["cpu"]
        a[3] = max(a[3], r["rss"])
        b = by_arch[(rule, architecture_of(config, rel))]
        b[0] += 1
        b[1] += r["wall"]
        b[2] += r["cpu"]
    total_wall = sum(v[1] for v in by_rule.values())
    total_cpu = sum(v[2] for v in by_rule.values())
    print(f"run {config['run_name']}: {len(files)} jobs, {total_wall:,.0f} s of job wall time, {total_cpu:,.0f} s CPU")
    print(f"{'rule':16s} {'jobs':>5s} {'wall s':>9s} {'share':>6s} {'CPU s':>9s} {'share':>6s} {'peak RSS MB':>11s}")
    for rule, (n, wall, cpu, rss) in sorted(by_rule.items(), key=lambda kv: -kv[1][2]):
        print(f"{rule:16s} {n:5d} {wall:9.1f} {wall / total_wall:6.1%} {cpu:9.1f} {cpu / max(total_cpu, 1e-9):6.1%} "
              f"{rss:11.0f}")
    print()
    print(f"{'rule':16s} {'architecture':14s} {'jobs':>5s} {'wall s':>9s} {'CPU s':>9s} {'CPU s/job':>9s}")
    for (rule, arch), (n, wall, cpu) in sorted(by_arch.items(), key=lambda kv: -kv[1][2]):
        if arch != "-":
            print(f"{rule:16s} {arch:14s} {n:5d} {wall:9.1f} {cpu:9.1f} {cpu / n:9.1f}")


if __name__ == "__main__":
    main()
