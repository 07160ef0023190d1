"""bench/where_time_goes.py reads every job of a run from the Snakemake log, also those without a
`benchmark:` file."""

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LOG = """\
Select jobs to execute...
Execute 2 jobs...
[Wed Dec  2 13:53:18 2026]
localrule job_spec:
    output: results/default/specs/eval/0ea321793b2d.json
    jobid: 213
    wildcards: kind=eval, hash=0ea321793b2d
[Wed Dec  2 13:53:18 2026]
rule train:
    input: results/default/models/expe/3f92c1d36ac3/spec.json
    jobid: 57
[Wed Dec  2 13:53:30 2026]
Finished jobid: 213 (Rule: job_spec)
1 of 3 steps (33%) done
[Wed Dec  2 13:53:30 2026]
localrule job_spec:
    jobid: 215
[Wed Dec  2 13:53:31 2026]
Finished jobid: 215 (Rule: job_spec)
[Wed Dec  2 13:54:00 2026]
Finished jobid: 57 (Rule: train)
"""


def _script():
    spec = importlib.util.spec_from_file_location("where_time_goes", ROOT / "bench" / "where_time_goes.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_where_time_goes_takes_every_jobs_wall_time_from_the_snakemake_log(tmp_path):
    log = tmp_path / "run.snakemake.log"
    log.write_text(LOG)
    run_wall, rules = _script().log_times(log)
    assert run_wall == 42.0
    assert {k: tuple(v) for k, v in rules.items()} == {"job_spec": (2, 13.0), "train": (1, 42.0)}


def test_mkl_vml_race_runs_both_arms_and_counts_every_process():
    """bench/mkl_vml_race.py (docs/performance.md): one wave of two processes, one per arm."""
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "mkl_vml_race.py"), "--waves", "1", "--per-wave", "2"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = {ln.split()[0]: ln.split()[1:] for ln in r.stdout.splitlines() if ln.startswith(("plain", "settled"))}
    assert set(rows) == {"plain", "settled"} and all(v[0] == "1" for v in rows.values())
    bad = subprocess.run([sys.executable, str(ROOT / "bench" / "mkl_vml_race.py"), "--spec", "x.json"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--spec and --data go together" in bad.stderr


def test_snakemake_overhead_runs_both_arms():
    """bench/snakemake_overhead.py (docs/performance.md): one repeat of a tiny workflow per arm."""
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "snakemake_overhead.py"), "--jobs", "6", "--cores", "1",
                        "--work", "0.05", "--repeats", "1"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    medians = r.stdout.split("median over repeats:")[-1]
    assert "default (100/1s): wall" in medians and "no limit: wall" in medians
