"""The Snakemake workflow: lint, dry runs of every config, the smoke config end to end, reruns of
one model only, config errors before any job, and a SIGKILLed training job that resumes."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

import expe.config as C

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
TABLES = ["section41", "ablations", "large", "scaling", "benchmarks", "hyperparameters"]


def smk(*args, cwd, timeout=600, check=True):
    r = subprocess.run(SNAKEMAKE + list(args), cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(r.stdout[-3000:] + r.stderr[-3000:])
    return r


def job_counts(output: str) -> dict[str, int]:
    """Parse Snakemake's 'Job stats' table."""
    lines = output.split("Job stats:")[1].splitlines()[3:]
    counts = {}
    for ln in lines:
        parts = ln.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    return counts


def write_config(path, base="config/smoke.yaml", **changes):
    cfg = yaml.safe_load((REPO / base).read_text())
    cfg = C.deep_merge(cfg, changes)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return str(path)


def test_lint_is_clean():
    r = smk("--lint", cwd=REPO)
    assert "Congratulations, your workflow is in a good condition!" in r.stdout + r.stderr


@pytest.mark.parametrize("configfile", [None, "config/paper.yaml", "config/paper_large.yaml"])
def test_dry_runs_succeed_without_network(configfile, tmp_path):
    args = ["-n", "paper_tables", "--cores", "1"] + (["--configfile", str(REPO / configfile)] if configfile else [])
    counts = job_counts(smk(*args, cwd=tmp_path).stdout)
    n_models = {None: 16, "config/paper.yaml": 8, "config/paper_large.yaml": 6}[configfile]
    assert counts["train"] == n_models and counts["tables"] == 1 and counts["plots"] == 1


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("smoke")
    t0 = time.time()
    smk("--configfile", str(REPO / "config/smoke.yaml"), "--cores", "2", "paper_tables", cwd=work)
    return work, time.time() - t0


def test_smoke_config_runs_end_to_end_and_every_table_has_numbers(smoke_run):
    work, seconds = smoke_run
    assert seconds < 180
    out = work / "paper_tables" / "smoke"
    for t in TABLES:
        for ext in ("md", "tex", "csv"):
            assert (out / f"{t}.{ext}").stat().st_size > 0
    res = work / "results" / "smoke"
    for t in ("section41", "ablations", "large", "scaling"):
        with open(out / f"{t}.csv") as f:
            for row in csv.DictReader(f):
                assert (res / row["source"]).exists()  # every row traces to its result file
                for col, value in row.items():
                    if col.startswith("Loss"):
                        float(value)  # the smoke run produced this number: the cell holds it
    with open(out / "benchmarks.csv") as f:
        assert next(csv.DictReader(f))["ARC-Easy acc"] == "not run: dataset unavailable offline"
    for p in ("loss_vs_length", "per_position", "training_curves", "position_values"):
        assert (out / "plots" / f"{p}.png").stat().st_size > 5000
    assert json.loads((out / "provenance.json").read_text())["run_name"] == "smoke"


def test_changing_one_model_reruns_only_that_model(smoke_run, tmp_path):
    work, _ = smoke_run
    cfg = write_config(tmp_path / "c.yaml", models={"expe": {"train": {"lr": 1e-3}}})
    counts = job_counts(smk("-n", "--configfile", cfg, "--cores", "1", "paper_tables", cwd=work).stdout)
    assert counts.get("model_spec") == 1 and counts.get("train") == 1 and counts.get("evaluate") == 1
    assert "corpus" not in counts and "tokenizer" not in counts and "shards" not in counts


def test_one_model_target_builds_only_that_model(tmp_path):
    r = smk("-n", "--configfile", str(REPO / "config/smoke.yaml"), "--cores", "1", "model_expe_p_stable", cwd=tmp_path)
    counts = job_counts(r.stdout)
    assert counts["train"] == 1 and counts["evaluate"] == 1 and "tables" not in counts
    assert "models/expe_p_stable/" in r.stdout and "models/expe/" not in r.stdout


@pytest.mark.parametrize("change, message", [
    ({"data": {"min_token": 5}}, "config error: data.min_token: unknown key (did you mean 'min_tokens'?)"),
    ({"models": {"expe": {"pe": {"name": "expo"}}}}, "config error: models.expe.pe.name: 'expo' is not allowed"),
    ({"train": {"steps": "many"}}, "config error: train.steps: must be of type integer, got 'many'"),
    ({"eval": {"multiples": [1, 64]}}, "config error: eval.multiples: ev=64 needs windows of 2049 tokens"),
])
def test_an_invalid_config_stops_before_any_job_with_one_message(change, message, tmp_path):
    cfg = write_config(tmp_path / "bad.yaml", **change)
    r = smk("--configfile", cfg, "--cores", "1", "paper_tables", cwd=tmp_path, check=False)
    assert r.returncode != 0
    assert message in r.stderr
    assert not (tmp_path / "results").exists()  # no job ran


def test_a_sigkilled_training_job_resumes_from_its_checkpoint_and_ends_bit_identical(tmp_path):
    cfg = write_config(tmp_path / "kill.yaml", run_name="kill",
                       train={"steps": 1500, "checkpoint_every": 100, "batch_size": 16})
    cmd = SNAKEMAKE + ["--configfile", cfg, "--cores", "1", "model_expe"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ckpts = tmp_path / "results" / "kill" / "checkpoints" / "expe"  # <spec hash>/step-*.pt
    deadline = time.time() + 240
    killed_at = None
    while time.time() < deadline and proc.poll() is None:
        metrics = list(ckpts.glob("*/metrics.jsonl"))
        if metrics and len(metrics[0].read_text().splitlines()) > 250 and list(ckpts.glob("*/step-*.pt.sha256")):
            pids = subprocess.run(["pgrep", "-f", "expe train"], capture_output=True, text=True).stdout.split()
            pid = [p for p in pids if os.readlink(f"/proc/{p}/cwd") == str(tmp_path)]  # this test's job
            if pid:
                os.kill(int(pid[0]), signal.SIGKILL)  # the training job, mid-run
                killed_at = len(metrics[0].read_text().splitlines())
                break
        time.sleep(0.05)
    out, _ = proc.communicate(timeout=120)
    assert killed_at and killed_at < 1500, out[-2000:]
    assert proc.returncode != 0  # Snakemake saw the job die
    assert not list((tmp_path / "results" / "kill" / "models" / "expe").glob("*/model.safetensors"))

    smk("--configfile", cfg, "--cores", "1", "model_expe", cwd=tmp_path)  # the same command again
    (log_file,) = (tmp_path / "logs" / "kill" / "train").glob("expe.*.log")
    log = log_file.read_text()
    resumed = [ln for ln in log.splitlines() if "resuming from checkpoint at step" in ln]
    assert resumed and int(resumed[-1].split("at step ")[1].split("/")[0]) >= 200  # not from step 0

    # an uninterrupted run of the same spec, same seed, same thread count
    from expe.train import train

    spec = C.model_spec(C.load(cfg), "expe")
    (shards,) = (tmp_path / "results" / "kill" / "data").glob("*/shards")
    train(spec, shards, tmp_path / "ref", tmp_path / "ref_ck", progress=False)
    a = load_file(tmp_path / "ref" / "model.safetensors")
    (weights,) = (tmp_path / "results" / "kill" / "models" / "expe").glob("*/model.safetensors")
    b = load_file(weights)
    assert all((a[k] == b[k]).all() for k in a)  # bit-identical on CPU


def test_committed_tables_do_not_stop_a_fresh_clone_from_running_everything(tmp_path):
    import shutil

    shutil.copytree(REPO / "paper_tables", tmp_path / "paper_tables")  # as in a fresh clone
    counts = job_counts(smk("-n", "--cores", "2", "paper_tables", cwd=tmp_path).stdout)
    assert counts["train"] == 16 and counts["tables"] == 1 and counts["corpus"] == 1
