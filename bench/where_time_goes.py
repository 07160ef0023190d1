"""Where the time of a finished workflow run went: reads the Snakemake `benchmark:` files of a run
(benchmarks/<run_name>/**.tsv) and prints, per rule and per model architecture, the number of jobs,
their summed wall time and CPU time, and each rule's share of the total.

    python bench/where_time_goes.py                       # the default run
    python bench/where_time_goes.py --config config/cpu_study.yaml

Wall seconds of jobs that ran side by side add up to more than the run's own wall time; CPU seconds
are the work done, whatever ran beside it (Snakemake samples them, so short jobs under-count).

Rules without a `benchmark:` (the small `run:` jobs that write spec and index files) have no such
file; the script also reads the run's Snakemake log (the newest in .snakemake/log, or --log) and
prints every job's wall time from its start and finish lines (1-second resolution), per rule, and
the run's own wall time: that is where 90 spec jobs of 12 s each showed up (profiles/default).
"""

from __future__ import annotations

import argparse
import csv
import re
from collections import defaultdict
from datetime import datetime
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


STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")


def log_times(path: Path) -> tuple[float, dict[str, list[float]]]:
    """(the run's wall seconds, {rule: [jobs, summed job wall seconds]}) from a Snakemake log."""
    def when(text):
        return datetime.strptime(" ".join(text.split()), "%a %b %d %H:%M:%S %Y").timestamp()

    now = first = None
    pending, started, out = None, {}, defaultdict(lambda: [0, 0.0])
    for line in path.read_text(errors="replace").splitlines():
        if m := STAMP.match(line):
            now = when(m.group(1))
            first = now if first is None else first
        elif m := re.match(r"^(?:local)?rule (\w+):$", line):
            pending = (m.group(1), now)
        elif (m := re.match(r"^\s+jobid: (\d+)$", line)) and pending:
            started[m.group(1)], pending = pending, None
        elif m := re.match(r"^Finished jobid: (\d+) \(Rule: (\w+)\)", line):
            rule, t0 = started.pop(m.group(1), (m.group(2), now))
            out[rule][0] += 1
            out[rule][1] += now - t0
    return (now - first) if first is not None else 0.0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--root", default=".", help="the folder the workflow ran in")
    ap.add_argument("--log", help="the run's Snakemake log (default: the newest in <root>/.snakemake/log)")
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
    logs = sorted((Path(args.root) / ".snakemake" / "log").glob("*.snakemake.log"))
    log = Path(args.log) if args.log else (logs[-1] if logs else None)
    if log is None:
        return
    run_wall, rules = log_times(log)
    jobs_wall = sum(w for _, w in rules.values())
    print(f"\nfrom the Snakemake log {log.name}: the run took {run_wall:,.0f} s; {sum(n for n, _ in rules.values())} "
          f"jobs, {jobs_wall:,.0f} s of job wall time (start to finish line, 1-s resolution)")
    print(f"{'rule':16s} {'jobs':>5s} {'wall s':>9s} {'share':>6s} {'s/job':>7s}")
    for rule, (n, wall) in sorted(rules.items(), key=lambda kv: -kv[1][1]):
        print(f"{rule:16s} {n:5d} {wall:9.1f} {wall / max(jobs_wall, 1e-9):6.1%} {wall / n:7.1f}")


if __name__ == "__main__":
    main()
