"""Snakemake's default job rate limit (--max-jobs-per-timespan 100/1s) is dropped when the workflow
starts (expe.workflow.drop_default_job_rate_limit, called at `onstart:`): with it, every finished
job leaves a 1-s timer that re-runs the scheduler once a second while other jobs wait, which cost the
default run half a core of its two (bench/snakemake_overhead.py)."""

import os
import subprocess
import sys
from types import SimpleNamespace

from expe.workflow import drop_default_job_rate_limit


def _workflow(max_jobs, timespan):
    limiter = SimpleNamespace(max_jobs=max_jobs, timespan=timespan)
    return SimpleNamespace(scheduler=SimpleNamespace(job_rate_limiter=limiter))


def test_only_snakemakes_default_limit_is_dropped():
    wf = _workflow(100, 1.0)  # what "100/1s" parses to
    assert drop_default_job_rate_limit(wf) and wf.scheduler.job_rate_limiter is None
    user = _workflow(5, 60.0)  # a limit someone chose is kept
    assert not drop_default_job_rate_limit(user) and user.scheduler.job_rate_limiter.max_jobs == 5
    assert not drop_default_job_rate_limit(SimpleNamespace())  # no scheduler (dry run, lint): nothing to do
    assert not drop_default_job_rate_limit(SimpleNamespace(scheduler=SimpleNamespace(job_rate_limiter=None)))


SNAKEFILE = """
import os
onstart:
    if os.environ.get("DROP") == "1":
        from expe.workflow import drop_default_job_rate_limit
        assert drop_default_job_rate_limit(workflow)
rule all:
    input: expand("out/{i}.txt", i=range(JOBS))
rule work:
    output: "out/{i}.txt"
    shell: "sleep 0.25 && touch {output}"
"""


def _scheduling_rounds(tmp_path, drop: bool, jobs: int) -> int:
    wd = tmp_path / ("drop" if drop else "default")
    wd.mkdir()
    (wd / "Snakefile").write_text(SNAKEFILE.replace("JOBS", str(jobs)))
    r = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", "--verbose", "all"], cwd=wd,
                       env=dict(os.environ, DROP="1" if drop else "0"), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stderr.count("Ready jobs:")  # Snakemake logs it (debug) in every round that selects jobs


def test_without_the_default_limit_the_scheduler_runs_once_per_finished_job(tmp_path):
    """12 jobs of 0.25 s on one core (3 s): with the default limit, the timers left by finished jobs
    add rounds (1 + 2 + ... a second); without it there is one round per finished job."""
    jobs = 12
    default, dropped = _scheduling_rounds(tmp_path, False, jobs), _scheduling_rounds(tmp_path, True, jobs)
    assert dropped <= jobs + 3, dropped  # measured: jobs + 1
    assert default >= jobs + 6, default  # measured: 2 x jobs + 1; the control: Snakemake's own behaviour, which the package avoids
