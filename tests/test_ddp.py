"""Data-parallel training under torchrun, on CPU with the gloo backend: two processes follow the
one-process loss curve (same global batch, schedule and data order), and a SIGTERMed DDP run
checkpoints, exits 143 through `expe.training.launch`, and resumes to the same weights."""

import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_spec
from expe.training.loop import train

# Dropout off: with dropout each rank draws its own masks, so the curves would differ by sampling noise.
TOLERANCE = 1e-4  # nats; what remains is float summation order in the gradient all-reduce


def spec(**train_kw):
    s = tiny_spec(**train_kw)
    s["model"]["dropout"] = 0.0
    return s


def launch(spec_, shards, out, ckpt, nproc=2, **popen):
    cmd = [sys.executable, "-m", "expe.training.launch", "--standalone", "--nproc_per_node", str(nproc), "-m", "expe.cli",
           "train", "--spec", json.dumps(spec_), "--data", str(shards), "--out", str(out), "--checkpoints", str(ckpt),
           "--device", "cpu", "--no-progress"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def curve(path):
    return [json.loads(x)["loss"] for x in path.read_text().splitlines()]


def test_two_gloo_processes_follow_the_one_process_loss_curve(shards, tmp_path):
    s = spec(steps=12, grad_accum=2)
    proc = launch(s, shards, tmp_path / "ddp", tmp_path / "ddp_ck")
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, out[-3000:]
    train(s, shards, tmp_path / "one", tmp_path / "one_ck", progress=False)
    a, b = curve(tmp_path / "ddp" / "metrics.jsonl"), curve(tmp_path / "one" / "metrics.jsonl")
    assert len(a) == len(b) == 12
    assert max(abs(x - y) for x, y in zip(a, b)) < TOLERANCE
    assert json.loads((tmp_path / "ddp" / "config.json").read_text())["processes"] == 2
    wa, wb = load_file(tmp_path / "ddp" / "model.safetensors"), load_file(tmp_path / "one" / "model.safetensors")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)


def test_a_sigtermed_ddp_run_checkpoints_exits_143_and_resumes_to_the_same_weights(shards, tmp_path):
    s = spec(steps=400, checkpoint_every=100000, log_every=2)
    proc = launch(s, shards, tmp_path / "m", tmp_path / "c")
    metrics = tmp_path / "c" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 40):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # what Slurm sends on preemption; torchrun forwards it to the workers
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out[-3000:]
    (ck,) = (tmp_path / "c").glob("step-*.pt")
    step = int(ck.stem.split("-")[1])
    assert 40 <= step < 400 and not (tmp_path / "m" / "model.safetensors").exists()

    again = launch(s, shards, tmp_path / "m", tmp_path / "c")  # the resubmitted job
    out, _ = again.communicate(timeout=180)
    assert again.returncode == 0 and f"resuming from checkpoint at step {step}/400" in out, out[-3000:]
    ref = launch(s, shards, tmp_path / "ref", tmp_path / "ref_ck")  # uninterrupted DDP run
    assert ref.communicate(timeout=180)[0] and ref.returncode == 0
    assert curve(tmp_path / "m" / "metrics.jsonl") == curve(tmp_path / "ref" / "metrics.jsonl")
    wa, wb = load_file(tmp_path / "m" / "model.safetensors"), load_file(tmp_path / "ref" / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_batch_that_does_not_split_over_the_processes_is_a_one_line_error(shards, tmp_path):
    proc = launch(spec(batch_size=3), shards, tmp_path / "m", tmp_path / "c")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "expe: error: train.batch_size: 3 windows cannot be split evenly over 2 processes" in out


@pytest.mark.slow
def test_torch_compile_trains_on_cpu_and_matches_eager(shards, tmp_path):
    s = spec(steps=4)
    train(s, shards, tmp_path / "eager", tmp_path / "ce", progress=False)
    train({**s, "train": {**s["train"], "compile": True}}, shards, tmp_path / "comp", tmp_path / "cc", progress=False)
    a, b = curve(tmp_path / "eager" / "metrics.jsonl"), curve(tmp_path / "comp" / "metrics.jsonl")
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-3


def test_the_launch_command_is_torchrun_on_one_node_and_srun_torchrun_with_c10d_on_several():
    from expe.training.launch import launch_command

    argv = ["train", "--nproc", "4", "--spec-file", "s.json", "--data", "d", "--out", "o"]
    one = launch_command(argv, 4, {})
    assert one[1:] == ["-m", "expe.training.launch", "--standalone", "--nproc_per_node=4", "-m", "expe.cli", "train",
                       "--spec-file", "s.json", "--data", "d", "--out", "o"]  # --nproc consumed, the rest kept
    env = {"SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_JOB_ID": "4242",
           "EXPE_RDZV_HOST": "gpu07"}
    multi = launch_command(argv, 4, env)
    assert multi[:4] == ["srun", "--nodes=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
    assert {"--nnodes=2", "--nproc_per_node=4", "--rdzv_backend=c10d", "--rdzv_endpoint=gpu07:29500",
            "--rdzv_id=4242"} <= set(multi)
    assert multi[multi.index("-m", 6) + 1] == "expe.cli" and "--nproc" not in multi
