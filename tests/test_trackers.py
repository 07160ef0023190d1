"""Experiment tracking (expe.training.trackers): what is written is read back from disk.

TensorBoard: the event file, through TensorBoard's own EventAccumulator. W&B: an offline run (no
network: WANDB_MODE=offline, an unreachable WANDB_BASE_URL, and in-process connects refused), read
back from its `.wandb` transaction log (wandb >= 0.2x no longer ships a reader, so the test reads the
documented LevelDB-log framing itself and decodes the records with wandb's protobuf classes).
"""

from __future__ import annotations

import json
import logging
import socket
import struct
import sys
import zlib

import pytest

from expe.errors import ConfigError
from expe.training import trackers as T
from expe.training.trackers import open_trackers

CONFIG = {"name": "expe_s", "seed": 3,
          "model": {"d_model": 32, "n_layer": 2, "pe": {"name": "expe"}},
          "train": {"lr": 3e-3, "betas": [0.9, 0.95], "trackers": ["tensorboard", "wandb"]}}

# (step, metrics) as a trainer logs them: None = not measured at that step
STEPS = [
    (0, {"loss": 4.5, "lr": 0.0, "grad_norm": 2.0, "tokens_per_s": None}),
    (10, {"loss": 3.25, "lr": 1e-3, "grad_norm": None, "tokens_per_s": 12000.0}),
    (20, {"loss": 2.75, "lr": 5e-4, "grad_norm": 0.5, "tokens_per_s": 12500.0, "eval/loss_ev4": 2.875}),
]
SUMMARY = {"eval/loss_ev4": 2.875, "ppl": {"ev4": 17.5}, "final_step": 20, "note": "a string"}


def expected_series():
    out: dict[str, list[tuple[int, float]]] = {}
    for step, metrics in STEPS:
        for k, v in metrics.items():
            if v is not None:
                out.setdefault(k, []).append((step, v))
    return out


@pytest.fixture
def no_network(monkeypatch):
    """In-process TCP connects (other than to this machine) fail the test."""
    real = socket.create_connection

    def guarded(address, *a, **kw):
        if address[0] not in ("localhost", "127.0.0.1", "::1"):
            raise AssertionError(f"network access attempted: {address}")
        return real(address, *a, **kw)

    monkeypatch.setattr(socket, "create_connection", guarded)


# ------------------------------------------------------------------------------------- TensorBoard
def test_tensorboard_event_file_round_trip(tmp_path, no_network, caplog):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    caplog.set_level(logging.INFO, logger="expe")
    logs = tmp_path / "logs"
    with open_trackers(["tensorboard"], logs, run="expe_s/seed3", group="paper/expe_s", config=CONFIG) as tr:
        for step, metrics in STEPS:
            tr.log(step, metrics)
        tr.summary(SUMMARY)
    assert tr.tb is None  # closed by the context manager
    assert "tensorboard --logdir" in caplog.text

    run_dir = logs / "expe_s" / "seed3"
    events = list(run_dir.glob("events.out.tfevents.*"))
    assert len(events) == 1, list(logs.rglob("*"))  # hparams go into the same file: no sub-folder
    assert [p for p in logs.rglob("*") if p.is_file()] == events

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    series = expected_series()
    summary_tags = {"summary/eval/loss_ev4": 2.875, "summary/ppl/ev4": 17.5, "summary/final_step": 20.0}
    assert set(acc.Tags()["scalars"]) == set(series) | set(summary_tags)
    for tag, points in series.items():
        got = [(e.step, e.value) for e in acc.Scalars(tag)]
        assert [s for s, _ in got] == [s for s, _ in points], tag
        assert [v for _, v in got] == pytest.approx([v for _, v in points], rel=1e-6), tag
    for tag, value in summary_tags.items():  # final results: at the last logged step
        [e] = acc.Scalars(tag)
        assert (e.step, e.value) == (20, pytest.approx(value, rel=1e-6))
    # the hparams plugin entry (flattened config vs the summary metrics)
    hp = acc.PluginTagToContent("hparams")
    assert "_hparams_/experiment" in hp and "_hparams_/session_start_info" in hp
    from tensorboard.plugins.hparams import plugin_data_pb2
    start = plugin_data_pb2.HParamsPluginData.FromString(hp["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["model.pe.name"].string_value == "expe"
    assert start.hparams["model.d_model"].number_value == 32
    assert start.hparams["train.betas"].string_value == "[0.9, 0.95]"
    exp = plugin_data_pb2.HParamsPluginData.FromString(hp["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in exp.metric_infos} == set(summary_tags)


def test_tensorboard_resume_purges_later_steps(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with open_trackers(["tensorboard"], tmp_path, run="r", group="g", config={}) as tr:
        for step in (0, 10, 20, 30):  # an attempt interrupted after step 30, checkpoint at 20
            tr.log(step, {"loss": float(step)})
    with open_trackers(["tensorboard"], tmp_path, run="r", group="g", config={}, start_step=20) as tr:
        for step in (20, 30, 40):
            tr.log(step, {"loss": step + 0.5})
    acc = EventAccumulator(str(tmp_path / "r"), size_guidance={"scalars": 0})
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("loss")] == [(0, 0.0), (10, 10.0), (20, 20.5), (30, 30.5),
                                                                (40, 40.5)]


# ------------------------------------------------------------------------------------- W&B offline
def read_wandb_log(path):
    """The protobuf Records of a `.wandb` file (LevelDB-log framing: a 7-byte ':W&B' header, 32 KiB
    blocks, each chunk `<crc32 u32><length u16><type u8>`; FULL=1, FIRST=2, MIDDLE=3, LAST=4)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:7] == struct.pack("<4sHB", b":W&B", 0xBEE1, 0), data[:7]
    pos, block, pending, out = 7, 32768, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        crc, n, kind = struct.unpack("<IHB", data[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if left < 7 or (n == 0 and kind == 0):  # block trailer / padding
            pos += left
            continue
        chunk = data[pos + 7:pos + 7 + n]
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) == crc, f"bad checksum at byte {pos}"
        pos += 7 + n
        pending += chunk
        if kind in (1, 4):
            out.append(pb.Record.FromString(pending))
            pending = b""
    return out


def wandb_contents(records):
    """(run record, {step: history row}, final summary) from the records of one run."""
    run, history, summary = None, {}, {}
    for r in records:
        kind = r.WhichOneof("record_type")
        if kind == "run":
            run = r.run
        elif kind == "history":
            row = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item}
            history[row["_step"]] = {k: v for k, v in row.items() if not k.startswith("_")}
        elif kind == "summary":
            for i in r.summary.update:
                keys = [i.key] if i.key else list(i.nested_key)
                d = summary
                for k in keys[:-1]:
                    d = d.setdefault(k, {})
                d[keys[-1]] = json.loads(i.value_json)
    return run, history, summary


@pytest.fixture
def wandb_offline_env(tmp_path, monkeypatch, no_network):
    pytest.importorskip("wandb")
    home = tmp_path / "wandb_home"
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # if anything tried: nothing listens there
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(home / var.lower()))
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    monkeypatch.delenv("WANDB_RUN_ID", raising=False)

    def no_probe(*a, **kw):
        raise AssertionError("WANDB_MODE is set: the network must not be probed")

    monkeypatch.setattr(T, "wandb_reachable", no_probe)
    return tmp_path


def test_wandb_offline_run_round_trip(wandb_offline_env, caplog):
    caplog.set_level(logging.INFO, logger="expe")
    logs = wandb_offline_env / "logs"
    with open_trackers(["wandb"], logs, run="expe_s/seed3", group="paper/expe_s", config=CONFIG) as tr:
        for step, metrics in STEPS:
            tr.log(step, metrics)
        tr.summary(SUMMARY)
        offline_dir = tr.wandb_offline_dir
    assert tr.wandb_run is None

    [run_dir] = (logs / "wandb").glob("offline-run-*")
    assert offline_dir == run_dir
    assert f"wandb sync {run_dir}" in caplog.text
    [log_file] = run_dir.glob("run-*.wandb")

    run, history, summary = wandb_contents(read_wandb_log(log_file))
    assert (run.project, run.run_group, run.display_name, run.job_type) == ("expe", "paper/expe_s", "expe_s/seed3",
                                                                            "train")
    config = {i.key: json.loads(i.value_json) for i in run.config.update}
    assert config["model"] == CONFIG["model"] and config["train"] == CONFIG["train"]
    assert config["seed"] == 3

    assert sorted(history) == [0, 10, 20]
    for step, metrics in STEPS:
        assert history[step] == pytest.approx({k: v for k, v in metrics.items() if v is not None}), step
    for k, v in SUMMARY.items():
        assert summary[k] == (pytest.approx(v) if isinstance(v, float) else v), k
    assert summary["loss"] == pytest.approx(2.75)  # W&B's own summary: the last logged value


def test_wandb_mode_from_environment_or_probe(monkeypatch):
    monkeypatch.delenv("WANDB_DISABLED", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert T.wandb_mode() == ("offline", True)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert T.wandb_mode() == ("disabled", True)

    monkeypatch.delenv("WANDB_MODE")
    tried = []

    def refuse(address, timeout=None):
        tried.append((address, timeout))
        raise OSError("network unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    assert T.wandb_mode() == ("offline", False)
    monkeypatch.setenv("WANDB_BASE_URL", "http://wandb.example.org:8080")
    assert T.wandb_mode() == ("offline", False)
    assert [a for a, _ in tried] == [("api.wandb.ai", 443), ("wandb.example.org", 8080)]
    assert all(t is not None and t <= 5 for _, t in tried)

    class Conn:
        def close(self):
            pass

    monkeypatch.setattr(socket, "create_connection", lambda address, timeout=None: Conn())
    assert T.wandb_mode() == ("online", False)


# ------------------------------------------------------------------------------------- no-op, errors
@pytest.mark.parametrize("names, enabled", [([], True), (None, True), (["tensorboard"], False)])
def test_no_trackers_do_nothing(tmp_path, names, enabled):
    if names:
        pytest.importorskip("tensorboard")
    logs = tmp_path / "logs"
    with open_trackers(names, logs, run="expe_s/seed3", group="g", config=CONFIG, enabled=enabled) as tr:
        assert not tr.active
        for step, metrics in STEPS:
            tr.log(step, metrics)
        tr.summary(SUMMARY)
    tr.close()  # twice is fine
    assert not logs.exists()
    assert list(tmp_path.iterdir()) == []


def test_unknown_tracker_names_the_allowed_ones(tmp_path):
    with pytest.raises(ConfigError) as e:
        open_trackers(["tensorboard", "mlflow"], tmp_path, run="r", group="g", config={})
    msg = str(e.value)
    assert "\n" not in msg
    assert "train.trackers" in msg and "'mlflow'" in msg and "tensorboard, wandb" in msg
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("enabled", [True, False])  # every rank fails alike
@pytest.mark.parametrize("name", ["tensorboard", "wandb"])
def test_missing_package_names_the_extra(tmp_path, monkeypatch, name, enabled):
    monkeypatch.setitem(sys.modules, name, None)  # `import <name>` raises ImportError
    with pytest.raises(ConfigError) as e:
        open_trackers([name], tmp_path, run="r", group="g", config={}, enabled=enabled)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg == f"train.trackers: '{name}' needs the {name} package (pip install 'expe-repro[trackers]')"
    assert list(tmp_path.iterdir()) == []


def test_exception_inside_closes_trackers(tmp_path):
    pytest.importorskip("tensorboard")
    with pytest.raises(RuntimeError):
        with open_trackers(["tensorboard"], tmp_path, run="r", group="g", config={}) as tr:
            tr.log(1, {"loss": 1.0})
            raise RuntimeError("diverged")
    assert tr.tb is None and not tr.active
    tr.log(2, {"loss": 2.0})  # after close: ignored, no error
