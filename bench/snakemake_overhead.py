"""How much CPU the Snakemake process itself takes while its jobs run, with and without a setting.

Snakemake 9's scheduler limits job starts with `--max-jobs-per-timespan` (default "100/1s"). After
every round of job selection that leaves a job waiting for a free core, it starts a
`threading.Timer(timespan)` that wakes the scheduler up again; every finished job wakes it up too,
and that round starts one more timer. The timers never stop while jobs wait, so a workflow with many
ready jobs on few cores ends up with one timer per finished job, each waking the scheduler once per
timespan for a full round of job selection (input functions, input file sizes, the solver). In the
default run on 2 cores, after ~240 jobs, the Snakemake process held ~145 threads and used about half
a core: a quarter of the machine, taken from the training and evaluation jobs.

This script runs the same synthetic workflow (N jobs of fixed CPU work, all ready at once, on
--cores C) with Snakemake's default and with the default limit dropped as the package's workflow
does (`expe.workflow.drop_default_job_rate_limit`, arm "no limit"), and optionally with other
`--max-jobs-per-timespan` values (--settings; a long timespan is no way out: Snakemake waits for
its last timer before it exits), alternated in fresh Snakemake processes, and prints per run: the
wall time, the Snakemake process's own CPU seconds (sampled every 0.2 s) and its largest thread count.

    python bench/snakemake_overhead.py [--jobs 120] [--cores 2] [--work 0.5] [--repeats 3] [--settings 1000/10s]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil  # a Snakemake dependency

from expe.training.speed import machine

SNAKEFILE = """
import os
onstart:
    if os.environ.get("BENCH_DROP_LIMIT") == "1":
        from expe.workflow import drop_default_job_rate_limit
        assert drop_default_job_rate_limit(workflow)
N = {jobs}
rule all:
    input: expand("out/{{i}}.txt", i=range(N))

rule work:
    output: "out/{{i}}.txt"
    input: "inputs/{{i}}.txt"
    shell: "{python} -c 'import time; t = time.process_time()\\nwhile time.process_time() - t < {work}: pass' && touch {{output}}"
"""


def run_once(workdir: Path, cores: int, setting: str | None) -> dict:
    env = dict(os.environ, BENCH_DROP_LIMIT="1" if setting == "no limit" else "0")
    for p in (workdir / "out").glob("*"):
        p.unlink()
    cmd = [sys.executable, "-m", "snakemake", "--cores", str(cores), "--quiet", "all"]
    if setting and setting != "no limit":
        cmd += ["--max-jobs-per-timespan", setting]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    seen = {"cpu": 0.0, "threads": 0}
    watched = psutil.Process(proc.pid)

    def sample():
        while proc.poll() is None:
            try:
                with watched.oneshot():
                    t, threads = watched.cpu_times(), watched.num_threads()
            except psutil.Error:  # it exited between the poll and the read
                break
            seen["cpu"], seen["threads"] = t.user + t.system, max(seen["threads"], threads)
            time.sleep(0.2)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - t0
    watcher.join()
    if proc.returncode:
        raise SystemExit(f"snakemake failed ({setting or 'default'}):\n{err[-2000:]}")
    return {"wall": wall, "snakemake_cpu": seen["cpu"], "threads": seen["threads"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=120)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--work", type=float, default=0.5, help="CPU seconds of each job")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--settings", default="", help="comma-separated --max-jobs-per-timespan values to add")
    args = ap.parse_args()
    print(json.dumps(machine()))
    arms = [None, "no limit"] + [a for a in args.settings.split(",") if a]
    with tempfile.TemporaryDirectory() as tmp:
        wd = Path(tmp)
        (wd / "inputs").mkdir()
        (wd / "out").mkdir()
        for i in range(args.jobs):
            (wd / "inputs" / f"{i}.txt").write_text("x")
        (wd / "Snakefile").write_text(SNAKEFILE.format(jobs=args.jobs, work=args.work, python=sys.executable))
        ideal = args.jobs * args.work / args.cores
        print(f"{args.jobs} jobs of {args.work} CPU s on --cores {args.cores} (ideal wall {ideal:.1f} s); "
              f"arms alternated, {args.repeats} repeats, each a fresh Snakemake")
        rows = {a: [] for a in arms}
        for r in range(args.repeats):
            for a in arms:
                res = run_once(wd, args.cores, a)
                rows[a].append(res)
                print(f"  repeat {r + 1} {a or 'default (100/1s)':>18}: wall {res['wall']:6.1f} s, "
                      f"Snakemake's own CPU {res['snakemake_cpu']:5.1f} s, up to {res['threads']} threads", flush=True)
        base = rows[None]
        print("median over repeats:")
        for a in arms:
            w = statistics.median(x["wall"] for x in rows[a])
            c = statistics.median(x["snakemake_cpu"] for x in rows[a])
            ratio = [b["wall"] / x["wall"] for b, x in zip(base, rows[a])]
            print(f"  {a or 'default (100/1s)':>18}: wall {w:6.1f} s, Snakemake CPU {c:5.1f} s, "
                  f"default wall / this wall x{statistics.median(ratio):.3f} [{min(ratio):.3f}-{max(ratio):.3f}]")


if __name__ == "__main__":
    main()
