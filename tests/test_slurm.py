"""The Slurm profile against a real Slurm (a single-node cluster from Debian's packages, started by
tests/slurm/start-local-slurm.sh as root): the smoke config runs through `--profile profiles/slurm`,
jobs are submitted with the profile's resources (a GPU request on a node with a fake GPU GRES among
them) and seen to finish through sacct; a training job stopped with `scancel --signal=TERM` is
resubmitted by the profile's retries and resumes from its checkpoint to the same weights."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

import expe.config as C
from conftest import REPO, UNACTIVATED, write_config

pytestmark = pytest.mark.slow


def _slurm_up() -> str | None:
    """None if a Slurm cluster with accounting answers; else why the tests are skipped."""
    if not shutil.which("sbatch"):
        return "Slurm is not installed (as root: tests/slurm/start-local-slurm.sh installs and starts one)"
    try:
        ok = subprocess.run(["sinfo", "-h"], capture_output=True, timeout=20).returncode == 0
        acct = subprocess.run(["sacct", "-n", "-X", "-S", "now"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = acct = False
    if not ok:
        return "no Slurm controller answers (start one: sudo tests/slurm/start-local-slurm.sh)"
    if not acct:
        return "Slurm accounting (slurmdbd) is not running; sacct fails"
    states = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20).stdout.split()
    if not any(s.rstrip("*~#").startswith(("idle", "mix", "alloc")) for s in states):
        return f"no Slurm node can run jobs (states: {', '.join(states) or 'none'}; sinfo -R says why)"
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return "snakemake-executor-plugin-slurm is not installed (pip install -e '.[slurm]')"
    return None


SKIP = _slurm_up()
skip_without_slurm = pytest.mark.skipif(SKIP is not None, reason=SKIP or "")
FAST = ["--slurm-init-seconds-before-status-checks", "5", "--seconds-between-status-checks", "5", "--latency-wait", "10"]


def smk_slurm(*args, cwd, timeout=1800, check=True, profile=REPO / "profiles/slurm"):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--profile", str(profile),
           *args, *FAST]
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=UNACTIVATED)
    if check and r.returncode != 0:
        raise AssertionError(r.stdout[-4000:] + r.stderr[-4000:])
    return r


def sacct(since: str) -> list[dict[str, str]]:
    fields = "JobID,JobName,Partition,State,ExitCode,AllocTRES,ReqCPUS,Comment"
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-S", since, "-o", fields], capture_output=True, text=True).stdout
    return [dict(zip(fields.split(","), ln.split("|"))) for ln in out.splitlines() if ln]


@skip_without_slurm
def test_the_smoke_config_runs_through_the_slurm_profile(tmp_path):
    since = time.strftime("%Y-%m-%dT%H:%M:%S")
    cfg = write_config(tmp_path / "c.yaml", run_name="slurm", seeds=[1])
    # The profile as shipped, plus one GPU per training job (the CPU smoke config asks for none). Not
    # `--set-resources train:gpu=1` on the command line: that replaces the profile's whole
    # set-resources, and the training jobs would lose their partition and memory.
    prof = yaml.safe_load((REPO / "profiles/slurm/profile.yaml").read_text())
    prof["set-resources"]["train"]["gpu"] = 1
    (tmp_path / "profile").mkdir()
    (tmp_path / "profile" / "profile.yaml").write_text(yaml.safe_dump(prof))
    r = smk_slurm("paper_tables", "--configfile", cfg, cwd=tmp_path, profile=tmp_path / "profile")
    out = tmp_path / "paper_tables" / "slurm"
    assert (out / "section41.md").exists() and (out / "data" / "results.csv").exists()
    jobs = sacct(since)
    assert len(jobs) >= 20 and all(j["State"] == "COMPLETED" for j in jobs), jobs
    train = [j for j in jobs if "rule_train" in j["Comment"]]
    assert train and all(j["Partition"] == "gpu" and "gres/gpu=1" in j["AllocTRES"] for j in train)
    assert all(j["ReqCPUS"] == "8" for j in train)  # the profile's set-threads: train 8
    tok = [j for j in jobs if "rule_tokenizer" in j["Comment"] or "rule_shards" in j["Comment"]]
    assert not tok  # download_locally: the steps that need the internet ran on the submitting host
    assert "expe: workflow finished in" in r.stdout + r.stderr


@skip_without_slurm
def test_a_training_job_stopped_with_sigterm_is_resubmitted_and_resumes_to_the_same_weights(tmp_path):
    cfg = write_config(tmp_path / "k.yaml", run_name="preempt", seeds=[1],
                       train={"steps": 1500, "checkpoint_every": 100, "batch_size": 16})
    proc = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--profile", str(REPO / "profiles/slurm"),
         "model_expe", "--configfile", cfg, *FAST], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env=UNACTIVATED)
    ckpts = tmp_path / "results" / "preempt" / "checkpoints" / "expe"
    deadline, job = time.time() + 600, None
    while time.time() < deadline and proc.poll() is None:
        if list(ckpts.glob("*/step-*.pt.sha256")):
            q = subprocess.run(["squeue", "-h", "-o", "%i %k"], capture_output=True, text=True).stdout.split("\n")
            job = next((ln.split()[0] for ln in q if "rule_train" in ln), None)
            if job:
                subprocess.run(["scancel", "--signal=TERM", job], check=True)  # what preemption sends
                break
        time.sleep(0.5)
    out, _ = proc.communicate(timeout=1200)
    assert job, out[-3000:]
    assert proc.returncode == 0, out[-3000:]  # retries: 2 resubmitted the job, which finished
    # Snakemake deletes the failed attempt's `log:` before the retry; <checkpoints>/train.log keeps both
    (log_file,) = ckpts.glob("*/train.log")
    log = log_file.read_text()
    assert "SIGTERM received; checkpoint written" in log and "resuming from checkpoint at step" in log
    assert log.index("SIGTERM received") < log.index("resuming from checkpoint")
    from expe.training.loop import train

    spec = C.model_spec(C.load(cfg), "expe", 1)
    (shards,) = (tmp_path / "results" / "preempt" / "data").glob("*/shards")
    # the job asked for 8 CPUs, but Snakemake inside the job caps its threads at the cores it sees;
    # the reference must use the same count (a different one sums in another order: not bit-equal)
    job_logs = "".join(p.read_text() for p in (tmp_path / ".snakemake" / "slurm_logs" / "rule_train").rglob("*.log"))
    threads = int(re.search(r"--threads (\d+)", job_logs).group(1))
    train(spec, shards, tmp_path / "ref", tmp_path / "ref_ck", threads=threads, progress=False)
    a = load_file(tmp_path / "ref" / "model.safetensors")
    (weights,) = (tmp_path / "results" / "preempt" / "models" / "expe").glob("*/model.safetensors")
    b = load_file(weights)
    assert all((a[k] == b[k]).all() for k in a)


@skip_without_slurm
def test_the_multi_node_recipe_runs_as_a_batch_job(tmp_path):
    """srun + torchrun with c10d rendezvous (the recipe of expe.training.launch.launch_command), on one node here."""
    from conftest import tiny_spec, write_shards
    import numpy as np

    data = write_shards(tmp_path / "d", {"train": [np.arange(600) % 97], "dev": [np.arange(300) % 97],
                                         "test": [np.arange(300) % 97]})
    spec = tiny_spec(steps=6)
    spec["model"]["dropout"] = 0.0
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    script = tmp_path / "job.sh"
    script.write_text(f"""#!/bin/bash
#SBATCH --nodes=1 --ntasks-per-node=1 --cpus-per-task=2 --partition=cpu --account=my_account --time=10
export EXPE_RDZV_HOST=$(hostname -s) SLURM_JOB_NUM_NODES=2
{sys.executable} -c "from expe.training.launch import launch_command; import os; print(' '.join(launch_command(['train'], 2, dict(os.environ))))"
srun --ntasks-per-node=1 {sys.executable} -m expe.training.launch --nnodes=1 --nproc_per_node=2 --rdzv_backend=c10d \\
  --rdzv_endpoint=$(hostname -s):29511 --rdzv_id=$SLURM_JOB_ID -m expe.cli train --spec-file {tmp_path}/spec.json \\
  --data {data} --out {tmp_path}/m --checkpoints {tmp_path}/c --device cpu --no-progress
""")
    r = subprocess.run(["sbatch", "--wait", "-o", str(tmp_path / "job.out"), str(script)], capture_output=True,
                       text=True, timeout=600, cwd=tmp_path)
    out = (tmp_path / "job.out").read_text()
    assert r.returncode == 0, out[-3000:]
    assert "srun --nodes=2 --ntasks-per-node=1" in out and "--rdzv_backend=c10d" in out
    assert json.loads((tmp_path / "m" / "config.json").read_text())["processes"] == 2
