"""Training: learns, is deterministic, resumes exactly, checkpoints on SIGTERM, stops on NaN."""

import json
import signal
from pathlib import Path
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_spec, write_shards
from expe.errors import CheckpointError, DataError, TrainingDiverged
from expe.runtime import load_trained
from expe.training.loop import TrainConfig, train


def losses(model_dir):
    return [json.loads(x)["loss"] for x in (model_dir / "metrics.jsonl").read_text().splitlines()]


def test_lr_schedule_warms_up_then_decays_to_end_lr():
    t = TrainConfig(steps=100, lr=1.0, end_lr=0.1, warmup_ratio=0.1, schedule="cosine")
    assert t.lr_at(0) == pytest.approx(0.1) and t.lr_at(9) == pytest.approx(1.0)
    assert t.lr_at(99) == pytest.approx(0.1)
    assert all(t.lr_at(s) >= t.lr_at(s + 1) for s in range(10, 99))
    lin = TrainConfig(steps=100, lr=1.0, end_lr=0.0, warmup_ratio=0.0, schedule="linear")
    assert lin.lr_at(0) == 1.0 and lin.lr_at(99) == 0.0


def test_a_tiny_model_overfits_a_short_text(tmp_path):
    text = np.array([5, 17, 3, 42, 8, 61, 23, 11] * 40)
    data = write_shards(tmp_path / "d", {"train": [text], "dev": [text], "test": [text]})
    spec = tiny_spec(steps=150, lr=1e-2, end_lr=1e-3, checkpoint_every=1000, log_every=50)
    spec["model"]["dropout"] = 0.0
    r = train(spec, data, tmp_path / "m", tmp_path / "c", progress=False)
    assert r["final_train_loss"] < 0.1  # from ln(97) = 4.6


def test_two_runs_with_the_same_seed_give_identical_losses(shards, tmp_path):
    train(tiny_spec(), shards, tmp_path / "a", tmp_path / "ca", progress=False)
    train(tiny_spec(), shards, tmp_path / "b", tmp_path / "cb", progress=False)
    assert losses(tmp_path / "a") == losses(tmp_path / "b")


def test_a_resumed_run_reproduces_the_uninterrupted_run(shards, tmp_path):
    train(tiny_spec(), shards, tmp_path / "full", tmp_path / "c_full", progress=False)
    r = train(tiny_spec(), shards, tmp_path / "part", tmp_path / "c_part", stop_after=6, progress=False)
    assert r == {"stopped_at": 6} and not (tmp_path / "part" / "model.safetensors").exists()
    train(tiny_spec(), shards, tmp_path / "part", tmp_path / "c_part", progress=False)  # resumes at step 6
    assert losses(tmp_path / "part") == losses(tmp_path / "full")
    a, b = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "part" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit-identical weights


def test_final_outputs_are_safetensors_with_a_json_config(shards, tmp_path):
    train(tiny_spec(pe={"name": "exqpe"}), shards, tmp_path / "m", tmp_path / "c", progress=False)
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["model"]["pe"] == {"name": "exqpe"} and cfg["pe_resolved"]["l"] == 4
    assert cfg["tokens"] == 12 * 4 * 16 and cfg["train_seconds"] > 0
    model = load_trained(tmp_path / "m")
    assert model.cfg.vocab_size == 97


def test_metrics_log_has_step_loss_lr_tokens_and_time(shards, tmp_path):
    train(tiny_spec(), shards, tmp_path / "m", tmp_path / "c", progress=False)
    rows = [json.loads(x) for x in (tmp_path / "m" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(12))
    assert {"step", "loss", "lr", "tokens", "train_seconds", "wall_time"} <= set(rows[0])


def test_nan_loss_stops_with_the_step_and_model_and_keeps_the_last_checkpoint(shards, tmp_path, monkeypatch):
    from expe.nn import model as M

    forward = M.Transformer.forward
    calls = {"n": 0}

    def poisoned(self, idx, targets=None, reduction="mean"):
        calls["n"] += 1
        logits, loss = forward(self, idx, targets, reduction)
        return logits, loss * float("nan") if calls["n"] > 9 else loss

    monkeypatch.setattr(M.Transformer, "forward", poisoned)
    with pytest.raises(TrainingDiverged, match=r"model 'expe': loss is nan at step 9; last good checkpoint at step 8"):
        train(tiny_spec(), shards, tmp_path / "m", tmp_path / "c", progress=False)
    assert (tmp_path / "c" / "step-00000008.pt").exists() and not (tmp_path / "m" / "model.safetensors").exists()


def test_a_checkpoint_of_another_config_is_refused(shards, tmp_path):
    train(tiny_spec(), shards, tmp_path / "m", tmp_path / "c", stop_after=4, progress=False)
    with pytest.raises(CheckpointError, match="different config of model 'expe'"):
        train(tiny_spec(lr=1e-2), shards, tmp_path / "m", tmp_path / "c", progress=False)


def test_a_truncated_checkpoint_is_detected_and_named(shards, tmp_path):
    train(tiny_spec(), shards, tmp_path / "m", tmp_path / "c", stop_after=4, progress=False)
    (ck,) = (tmp_path / "c").glob("step-*.pt")
    ck.write_bytes(ck.read_bytes()[:1000])
    with pytest.raises(DataError, match=f"checkpoint {ck} is corrupt or truncated .*no older intact checkpoint"):
        train(tiny_spec(), shards, tmp_path / "m", tmp_path / "c", progress=False)


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "Ctrl-C"])
def test_sigterm_writes_a_checkpoint_and_the_run_resumes_from_it(sig, code, shards, tmp_path):
    spec = tiny_spec(steps=100000, checkpoint_every=100000)
    cmd = [sys.executable, "-m", "expe.cli", "train", "--spec", json.dumps(spec), "--data", str(shards),
           "--out", str(tmp_path / "m"), "--checkpoints", str(tmp_path / "c"), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "c" / "metrics.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 10):
        time.sleep(0.1)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert f"{sig.name} received; checkpoint written" in err
    (ck,) = (tmp_path / "c").glob("step-*.pt")
    step = torch.load(ck, weights_only=False)["step"]
    assert step >= 10  # not step 0: the work done before the signal is kept
    r = train(spec, shards, tmp_path / "m", tmp_path / "c", stop_after=step + 2, progress=False)
    assert r == {"stopped_at": step + 2}  # resumed at `step`, ran two more
    assert len((tmp_path / "c" / "metrics.jsonl").read_text().splitlines()) == step + 2


# ---------------------------------------------------------------- a kill at any instant of a checkpoint write


def _kill_during_save(monkeypatch, stage):
    """Make Checkpointer.save die (as a SIGKILL would: nothing after runs) at `stage`."""
    import os

    from expe import io as io_mod
    from expe.training import loop as T

    class Killed(BaseException):
        pass

    real_replace, real_unlink = os.replace, Path.unlink
    calls = {"replace": 0, "unlink": 0}

    def replace(src, dst):
        calls["replace"] += 1
        if stage == "before the rename of the checkpoint" and calls["replace"] == 1:
            raise Killed
        if stage == "after the rename, before the checksum" and calls["replace"] == 2:
            raise Killed
        real_replace(src, dst)
        if stage == "after the checksum, before the old one is deleted" and calls["replace"] == 2:
            raise Killed

    def unlink(self, missing_ok=False):
        if stage == "between deleting the old checksum and the old file" and self.suffix == ".pt":
            raise Killed
        return real_unlink(self, missing_ok=missing_ok)

    def save(self, *a, **kw):
        monkeypatch.setattr(io_mod.os, "replace", replace)
        monkeypatch.setattr(Path, "unlink", unlink)
        try:
            return real_save(self, *a, **kw)
        finally:
            monkeypatch.setattr(io_mod.os, "replace", real_replace)
            monkeypatch.setattr(Path, "unlink", real_unlink)

    real_save = T.Checkpointer.save
    monkeypatch.setattr(T.Checkpointer, "save", save)
    return Killed


STAGES = ["before the rename of the checkpoint", "after the rename, before the checksum",
          "after the checksum, before the old one is deleted", "between deleting the old checksum and the old file"]


@pytest.mark.parametrize("stage", STAGES)
def test_a_checkpoint_write_killed_at_any_stage_leaves_a_run_that_resumes_bit_identical(stage, shards, tmp_path,
                                                                                       monkeypatch):
    train(tiny_spec(), shards, tmp_path / "full", tmp_path / "c_full", progress=False)
    train(tiny_spec(), shards, tmp_path / "m", tmp_path / "c", stop_after=4, progress=False)  # checkpoint at 4
    Killed = _kill_during_save(monkeypatch, stage)
    with pytest.raises(Killed):  # the write of the step-8 checkpoint dies at `stage`
        train(tiny_spec(), shards, tmp_path / "m", tmp_path / "c", progress=False)
    monkeypatch.undo()
    train(tiny_spec(), shards, tmp_path / "m", tmp_path / "c", progress=False)  # rerun: no person needed
    assert losses(tmp_path / "m") == losses(tmp_path / "full")
    a, b = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "m" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert len(list((tmp_path / "c").glob("step-*.pt"))) == 1  # old generations cleaned up


def test_only_the_newest_checkpoint_is_kept_and_a_corrupt_newest_falls_back_to_an_older_intact_one(shards, tmp_path):
    import shutil

    from expe.runtime import grad_scaler
    from expe.training.checkpoint import Checkpointer
    from expe.training.loop import build_model, make_optimizer

    train(tiny_spec(), shards, tmp_path / "m4", tmp_path / "c4", stop_after=4, progress=False)
    train(tiny_spec(), shards, tmp_path / "m", tmp_path / "c", stop_after=8, progress=False)
    assert [p.name for p in (tmp_path / "c").glob("step-*.pt")] == ["step-00000008.pt"]  # step 4 was deleted
    for name in ("step-00000004.pt", "step-00000004.pt.sha256"):  # an older intact generation ...
        shutil.copy(tmp_path / "c4" / name, tmp_path / "c" / name)
    (tmp_path / "c" / "step-00000008.pt").write_bytes(b"garbage")  # ... beside a corrupt newer one
    model, tcfg = build_model(tiny_spec(), 97)
    cpu = torch.device("cpu")
    step, _ = Checkpointer(tmp_path / "c", tiny_spec()).load(model, make_optimizer(model, tcfg, cpu),
                                                            grad_scaler(cpu, "fp32"))
    assert step == 4


# ---------------------------------------------------------------- devices and precisions a machine cannot provide


def test_more_gpus_than_visible_and_unsupported_precisions_are_one_line_errors(monkeypatch):
    from expe.errors import ConfigError
    from expe.runtime import check_devices, resolve_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    with pytest.raises(ConfigError, match="gpus: 2 processes need 2 GPUs but 1 are visible"):
        check_devices("cuda", 2, ["bf16"])
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla V100")
    with pytest.raises(ConfigError, match="precision: bf16 is not supported by Tesla V100; use fp16 or fp32"):
        resolve_precision(torch.device("cuda"), "bf16")
    monkeypatch.setattr(torch.amp, "is_autocast_available", lambda device_type: False)
    with pytest.raises(ConfigError, match="precision: fp16 needs autocast, which torch does not support on cpu"):
        resolve_precision(torch.device("cpu"), "fp16")


def test_fp16_training_uses_a_gradient_scaler_and_learns(shards, tmp_path):
    r = train(tiny_spec(precision="fp16", steps=8), shards, tmp_path / "m", tmp_path / "c", progress=False)
    assert r["precision_resolved"] == "fp16" and np.isfinite(r["final_train_loss"])
    state = torch.load(next((tmp_path / "c").glob("step-*.pt")), weights_only=False)
    assert state["scaler"]["scale"] > 0  # the scaler's state is checkpointed with the model


def test_the_metrics_log_reports_throughput_at_each_sync(shards, tmp_path):
    train(tiny_spec(), shards, tmp_path / "m", tmp_path / "c", progress=False)
    rows = [json.loads(x) for x in (tmp_path / "m" / "metrics.jsonl").read_text().splitlines()]
    synced = [r for r in rows if "tokens_per_s" in r]
    assert [r["step"] for r in synced] == [1, 3, 5, 7, 9, 11]  # log_every=2: one host sync per 2 steps
    assert all(r["tokens_per_s"] > 0 and "mfu" not in r for r in synced)  # no MFU on CPU (no known peak)


def test_mfu_uses_6N_plus_attention_flops_and_the_gpus_dense_bf16_peak(monkeypatch):
    from expe.nn.model import Transformer, preset
    from expe.runtime import peak_flops

    m = Transformer(preset("paper-S", pe={"name": "expe"}))
    n = m.param_counts()["non_embedding"]  # untied: the head is a matmul, the input embedding a lookup
    assert m.flops_per_token(512) == 6 * n + 12 * 12 * 768 * 512
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H100 80GB HBM3")
    assert peak_flops(torch.device("cuda")) == 989e12  # H100 SXM, not nanoGPT's A100 312e12
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA A100-SXM4-80GB")
    assert peak_flops(torch.device("cuda")) == 312e12
    assert peak_flops(torch.device("cpu")) is None


def test_the_train_command_appends_every_attempts_log_to_the_checkpoint_folder(shards, tmp_path):
    """Snakemake deletes a failed job's `log:` before a retry; <checkpoints>/train.log keeps each attempt."""
    import json
    import logging

    from expe.cli import main

    (tmp_path / "spec.json").write_text(json.dumps(tiny_spec()))
    argv = ["train", "--spec-file", str(tmp_path / "spec.json"), "--data", str(shards), "--out", str(tmp_path / "m"),
            "--checkpoints", str(tmp_path / "c"), "--no-progress"]
    logger = logging.getLogger("expe")
    level = logger.level
    try:
        assert main(argv + ["--stop-after", "6"]) == 0
        assert main(argv) == 0
    finally:  # the command adds a file handler to the package logger: leave the logger as it was
        logger.setLevel(level)
        for h in list(logger.handlers):
            if isinstance(h, logging.FileHandler):
                logger.removeHandler(h)
                h.close()
    log = (tmp_path / "c" / "train.log").read_text()
    assert "step 6/12" in log and "resuming from checkpoint at step 6/12" in log
    assert log.index("step 6/12") < log.index("resuming from checkpoint")


def test_a_second_training_on_the_same_checkpoint_folder_is_refused_in_one_line(shards, tmp_path, capsys):
    """Two runs of one training (Snakemake's lock bypassed, two working folders, two Slurm jobs) would
    append to one metrics log and race on the checkpoints: the second stops before touching anything."""
    import logging
    import socket

    from expe.cli import main

    spec = tiny_spec(steps=100000, checkpoint_every=100000)
    argv = ["train", "--spec", json.dumps(spec), "--data", str(shards), "--out", str(tmp_path / "m"),
            "--checkpoints", str(tmp_path / "c"), "--no-progress"]
    first = subprocess.Popen([sys.executable, "-m", "expe.cli"] + argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    metrics = tmp_path / "c" / "metrics.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 4):
        time.sleep(0.1)
    logger = logging.getLogger("expe")
    level = logger.level
    try:
        try:
            assert main(argv + ["--stop-after", "2"]) == 2
        finally:  # the command adds a file handler to the package logger
            logger.setLevel(level)
            for h in [h for h in logger.handlers if isinstance(h, logging.FileHandler)]:
                logger.removeHandler(h)
                h.close()
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert err == [f"expe: error: checkpoint folder {tmp_path / 'c'} is in use by process {first.pid} on "
                       f"{socket.gethostname()}; wait for it to end, or stop it"]
        assert first.poll() is None  # the first run goes on
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)
    steps = [json.loads(x)["step"] for x in metrics.read_text().splitlines()]
    assert steps == list(range(len(steps)))  # one writer: no line twice
    r = train(spec, shards, tmp_path / "m", tmp_path / "c", stop_after=len(steps) + 2, progress=False)
    assert r == {"stopped_at": len(steps) + 2}  # the lock died with its process: the run resumes


def test_tensorboard_tracking_records_every_logged_step_of_a_run_and_its_summary(shards, tmp_path):
    """train.trackers: [tensorboard] writes loss, learning rate and tokens/s at each host sync, under
    <track dir>/<model>/s<seed>, and the summary at the end; read back from the event file."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    spec = tiny_spec(trackers=["tensorboard"], steps=8, log_every=2, checkpoint_every=8)
    train(spec, shards, tmp_path / "m", tmp_path / "c", progress=False,
          track={"dir": str(tmp_path / "tb"), "group": "test"})
    (run,) = [p for p in (tmp_path / "tb").rglob("*") if p.is_dir() and any(q.name.startswith("events.") for q in p.iterdir())]
    acc = EventAccumulator(str(run))
    acc.Reload()
    rows = [json.loads(x) for x in (tmp_path / "m" / "metrics.jsonl").read_text().splitlines()]
    loss = {e.step: e.value for e in acc.Scalars("loss")}
    assert sorted(loss) == [r["step"] for r in rows]  # every logged step
    assert all(abs(loss[r["step"]] - r["loss"]) < 1e-6 for r in rows)
    assert {e.step for e in acc.Scalars("tokens_per_s")} == {r["step"] for r in rows if "tokens_per_s" in r}
    assert "summary/final_train_loss" in acc.Tags()["scalars"]
    assert run.relative_to(tmp_path / "tb").parts[-2:] == ("expe", "s3")


def test_an_evaluation_reports_its_losses_to_the_trackers_of_the_models_run(shards, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from expe.cli import main

    spec = tiny_spec(trackers=["tensorboard"], steps=4, log_every=2, checkpoint_every=4)
    train(spec, shards, tmp_path / "m", tmp_path / "c", progress=False, track={"dir": str(tmp_path / "tb")})
    assert main(["evaluate", "--model-dir", str(tmp_path / "m"), "--data", str(shards), "--out", str(tmp_path / "e.json"),
                 "--multiples", "1,2", "--max-tokens", "64", "--track-dir", str(tmp_path / "tb"), "--no-progress"]) == 0
    losses = {r["ev"]: r["loss"] for r in json.loads((tmp_path / "e.json").read_text())["results"]}
    found = {}
    for events in (tmp_path / "tb").rglob("events.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for k in (1, 2):
            tag = f"summary/eval/base/loss_ev{k}"
            if tag in acc.Tags()["scalars"]:
                found[k] = acc.Scalars(tag)[-1].value
    assert found == pytest.approx(losses)
