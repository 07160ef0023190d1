"""A write that fails for lack of space or permission, at each place the package writes: one line
`expe: error: <what> not written: no space left on device (<free> free) at <path>; <what is kept>`, exit
status 2, no traceback, nothing half-written under a final name, the previous state intact, and the
same command, rerun once space is freed, finishes as an uninterrupted run would (bit-identical weights).

The full disk is injected into the writer each site uses (Python's open, torch.save, safetensors),
which fails after writing part of its data, as a real full disk does; the last test fills a real
disk: a small tmpfs, where the tests run as root."""

import builtins
import errno
import fnmatch
import hashlib
import io
import json
import logging
import os
import re
import subprocess
from pathlib import Path
from unittest.mock import ANY

import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import make_config, synthetic_docs, tiny_spec
from expe.cli import main
from expe.data.prepare import prepare
from expe.data.tokenizer import build_tokenizer
from expe.training.loop import train

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
EACCES = PermissionError(errno.EACCES, os.strerror(errno.EACCES))
TMP = re.compile(r"^\.(?P<final>.+)\.[a-z0-9_]+\.tmp$")  # atomic_path's temporary name of <final>


def final_name(path) -> str:
    name = Path(os.fsdecode(path)).name
    m = TMP.match(name)
    return m["final"] if m else name


class FullDisk:
    """A file on a disk that fills up: write number `fail_at` (counted over the files of one
    fill_disk) writes half its data, then it and every later write or flush fail; close() closes the
    file and raises, as Python's buffered writer does."""

    def __init__(self, f, exc, count: dict):
        self.f, self.exc, self.count, self.full = f, exc, count, False

    def write(self, data):
        self.count["left"] -= 1
        if self.full or self.count["left"] <= 0:
            if not self.full:
                self.f.write(data[: len(data) // 2])
            self.full = True
            raise self.exc
        return self.f.write(data)

    def flush(self):
        if self.full:
            raise self.exc
        self.f.flush()

    def close(self):
        self.f.close()
        if self.full:
            raise self.exc

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __getattr__(self, name):
        return getattr(self.f, name)


def fill_disk(monkeypatch, pattern: str, exc=ENOSPC, fail_at: int = 1) -> dict:
    """Writes through Python's open to files named `pattern` (a glob on the final name, the file
    itself or its temporary file) fail from write number `fail_at` on."""
    real_open = builtins.open
    hits = {"files": [], "left": fail_at}

    def fake_open(file, mode="r", *a, **kw):
        f = real_open(file, mode, *a, **kw)
        if isinstance(file, (str, bytes, os.PathLike)) and set(mode) & set("wax+") \
                and fnmatch.fnmatch(final_name(file), pattern):
            hits["files"].append(os.fsdecode(file))
            return FullDisk(f, exc, hits)
        return f

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)  # pathlib's write_text / write_bytes
    return hits


def partial_native_write(real, exc):
    """A native writer (torch.save to a file, safetensors' save_file) that leaves half a file, then fails."""

    def write(obj, target, *a, **kw):
        if hasattr(target, "write"):  # torch.save(obj, f)
            buf = io.BytesIO()
            real(obj, buf)
            target.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        else:
            real(obj, target, *a, **kw)
            data = Path(target).read_bytes()
            Path(target).write_bytes(data[: len(data) // 2])
        raise exc

    return write


def run_cli(argv, capsys) -> tuple[int, list[str]]:
    """`expe ...` in-process; returns the exit status and the stderr lines (the logger left as it was)."""
    logger = logging.getLogger("expe")
    level = logger.level
    try:
        code = main(argv)
    finally:  # `expe train` adds a file handler to the package logger
        logger.setLevel(level)
        for h in list(logger.handlers):
            if isinstance(h, logging.FileHandler):
                logger.removeHandler(h)
                h.close()
    return code, capsys.readouterr().err.strip().splitlines()


def one_line(code, err, path, what, kept, reason="no space left on device") -> str:
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("expe: error: "), err  # no traceback, no second line
    line = err[0]
    assert f"{what} not written: {reason}" in line and f"at {path}" in line and line.endswith(kept), line
    if reason == "no space left on device":
        assert re.search(r"no space left on device \(\d+ (MB|kB) free", line), line
    return line


def no_temporary_files(*folders):
    left = [p for d in folders for p in Path(d).rglob("*") if TMP.match(p.name)]
    assert not left, left


def digests(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(folder).iterdir()) if p.is_file()}


def same_weights(a, b):
    a, b = load_file(a), load_file(b)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bit-identical


def losses(path):
    return [json.loads(x)["loss"] for x in Path(path).read_text().splitlines()]


# ---------------------------------------------------------------- training: checkpoints, metrics, weights


def train_argv(shards, tmp_path, spec=None):
    return ["train", "--spec", json.dumps(spec or tiny_spec()), "--data", str(shards), "--out", str(tmp_path / "m"),
            "--checkpoints", str(tmp_path / "c"), "--no-progress"]


@pytest.fixture
def reference(shards, tmp_path):
    """The uninterrupted run every interrupted one must end identical to."""
    train(tiny_spec(), shards, tmp_path / "ref", tmp_path / "ref_c", progress=False)
    return tmp_path / "ref"


def ends_like(reference, tmp_path):
    same_weights(reference / "model.safetensors", tmp_path / "m" / "model.safetensors")
    assert losses(tmp_path / "m" / "metrics.jsonl") == losses(reference / "metrics.jsonl")
    assert [p.name for p in (tmp_path / "c").glob("step-*.pt")] == ["step-00000012.pt"]


@pytest.mark.parametrize("failure", ["OSError ENOSPC", "torch's RuntimeError on a full disk"])
def test_a_checkpoint_that_does_not_fit_is_one_line_keeps_the_previous_and_the_rerun_ends_bit_identical(
        failure, shards, tmp_path, reference, capsys, monkeypatch):
    from expe import io as expe_io

    assert run_cli(train_argv(shards, tmp_path) + ["--stop-after", "4"], capsys)[0] == 0  # checkpoint at step 4
    before = digests(tmp_path / "c")
    if failure == "OSError ENOSPC":
        exc = ENOSPC
    else:  # what torch.save raises when the disk fills (issue 21); the free space tells it apart
        exc = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1992384 vs 1992272")
        monkeypatch.setattr(expe_io, "free_space", lambda path: 200 * 1024)
    monkeypatch.setattr(torch, "save", partial_native_write(torch.save, exc))
    capsys.readouterr()
    code, err = run_cli(train_argv(shards, tmp_path), capsys)
    line = one_line(code, err, tmp_path / "c" / "step-00000008.pt", "checkpoint step 8", "step 4 is kept")
    if failure != "OSError ENOSPC":
        assert re.search(r"\(200 kB free, 0\.\d MB needed\)", line), line
    monkeypatch.undo()
    no_temporary_files(tmp_path / "c", tmp_path / "m")
    assert {k: v for k, v in digests(tmp_path / "c").items() if k.startswith("step-")} == \
        {k: v for k, v in before.items() if k.startswith("step-")}  # only step 4, untouched
    assert not (tmp_path / "m" / "model.safetensors").exists()
    assert run_cli(train_argv(shards, tmp_path), capsys)[0] == 0  # space freed: the same command
    ends_like(reference, tmp_path)


def test_a_checksum_that_does_not_fit_leaves_only_the_previous_checkpoint(shards, tmp_path, reference, capsys,
                                                                         monkeypatch):
    assert run_cli(train_argv(shards, tmp_path) + ["--stop-after", "4"], capsys)[0] == 0
    fill_disk(monkeypatch, "step-00000008.pt.sha256")
    capsys.readouterr()
    code, err = run_cli(train_argv(shards, tmp_path), capsys)
    one_line(code, err, tmp_path / "c" / "step-00000008.pt.sha256", "checksum of checkpoint step 8", "step 4 is kept")
    monkeypatch.undo()
    no_temporary_files(tmp_path / "c")
    assert sorted(p.name for p in (tmp_path / "c").glob("step-*")) == ["step-00000004.pt", "step-00000004.pt.sha256"]
    assert run_cli(train_argv(shards, tmp_path), capsys)[0] == 0
    ends_like(reference, tmp_path)


def test_a_metrics_line_that_does_not_fit_is_one_line_and_the_rerun_ends_bit_identical(shards, tmp_path, reference,
                                                                                      capsys, monkeypatch):
    hits = fill_disk(monkeypatch, "metrics.jsonl", fail_at=7)  # the line of step 6, written at the sync of step 8
    capsys.readouterr()
    code, err = run_cli(train_argv(shards, tmp_path), capsys)
    one_line(code, err, tmp_path / "c" / "metrics.jsonl", "training metrics", "checkpoint step 4 is kept")
    monkeypatch.undo()
    assert hits["files"][-1] == str(tmp_path / "c" / "metrics.jsonl")  # the append, not a rewrite
    assert [p.name for p in (tmp_path / "c").glob("step-*.pt")] == ["step-00000004.pt"]
    assert run_cli(train_argv(shards, tmp_path), capsys)[0] == 0  # drops the cut line, resumes at step 4
    ends_like(reference, tmp_path)


def test_a_metrics_line_that_does_not_fit_before_any_checkpoint_says_so(shards, tmp_path, capsys, monkeypatch):
    fill_disk(monkeypatch, "metrics.jsonl", fail_at=1)
    code, err = run_cli(train_argv(shards, tmp_path), capsys)
    one_line(code, err, tmp_path / "c" / "metrics.jsonl", "training metrics", "no checkpoint yet")


def test_final_weights_that_do_not_fit_keep_the_last_checkpoint_and_the_rerun_writes_them(shards, tmp_path, reference,
                                                                                        capsys, monkeypatch):
    import safetensors.torch

    monkeypatch.setattr(safetensors.torch, "save_file", partial_native_write(safetensors.torch.save_file, ENOSPC))
    code, err = run_cli(train_argv(shards, tmp_path), capsys)
    one_line(code, err, tmp_path / "m" / "model.safetensors", "weights", "checkpoint step 12 is kept; rerun to finish")
    monkeypatch.undo()
    no_temporary_files(tmp_path / "m", tmp_path / "c")
    assert not (tmp_path / "m" / "model.safetensors").exists()
    assert run_cli(train_argv(shards, tmp_path), capsys)[0] == 0
    ends_like(reference, tmp_path)


def test_a_model_config_that_does_not_fit_is_one_line(shards, tmp_path, reference, capsys, monkeypatch):
    fill_disk(monkeypatch, "config.json")
    code, err = run_cli(train_argv(shards, tmp_path), capsys)
    one_line(code, err, tmp_path / "m" / "config.json", "model config", "checkpoint step 12 is kept; rerun to finish")
    monkeypatch.undo()
    no_temporary_files(tmp_path / "m")
    assert not (tmp_path / "m" / "config.json").exists()
    assert run_cli(train_argv(shards, tmp_path), capsys)[0] == 0
    ends_like(reference, tmp_path)


# ---------------------------------------------------------------- data: tokenizer, chunk parts, token shards, manifest


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A config, its tokenizer, shards prepared without a fault (the reference) and a trained model."""
    root = tmp_path_factory.mktemp("project")
    cfg = make_config(root, synthetic_docs(30), chunk_docs=4)
    (root / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    build_tokenizer(cfg, root / "tok" / "tokenizer.model")
    prepare(cfg, root / "tok" / "tokenizer.model", root / "shards", work_dir=root / "work", progress=False)
    train(tiny_spec(steps=8), root / "shards", root / "model", root / "ckpt", progress=False)
    return root


def prepare_argv(project, tmp_path):
    return ["prepare", "--config", str(project / "config.yaml"), "--tokenizer", str(project / "tok" / "tokenizer.model"),
            "--out", str(tmp_path / "shards"), "--work", str(tmp_path / "work"), "--no-progress"]


PARTS_KEPT = "the worker's earlier chunks are kept; free space and rerun to resume"
SHARDS_KEPT = "the tokenised chunk parts in {work} are kept; free space and rerun to finish"
DATA_SITES = [  # (file, which write fails, folder, what the message calls it, what is kept)
    ("part000001.bin", 1, "work/w000", "token part 1", PARTS_KEPT),
    ("part000002.json", 1, "work/w000", "index of token part 2", PARTS_KEPT),
    ("state.json", 2, "work/w000", "preparation state", PARTS_KEPT),
    ("train.bin", 3, "shards", "token shard train.bin", SHARDS_KEPT),
    ("train.bin", "close", "shards", "token shard train.bin", SHARDS_KEPT),  # the last flush
    ("test.idx.npy", 1, "shards", "token index test.idx.npy", SHARDS_KEPT),
    ("dev.json", 1, "shards", "shard metadata dev.json", SHARDS_KEPT),
    ("manifest.json", 1, "shards", "data manifest", SHARDS_KEPT),
]


@pytest.mark.parametrize("name, fail_at, folder, what, kept", DATA_SITES,
                         ids=[f"{s[0]} at write {s[1]}" for s in DATA_SITES])
def test_a_data_file_that_does_not_fit_is_one_line_and_the_rerun_ends_with_identical_shards(
        name, fail_at, folder, what, kept, project, tmp_path, capsys, monkeypatch):
    if fail_at == "close":  # every write lands in the buffer; the flush at close finds the disk full
        monkeypatch.setattr(FullDisk, "write", lambda self, data: (setattr(self, "full", True), len(data))[1])
        fail_at = 1
    fill_disk(monkeypatch, name, fail_at=fail_at)
    code, err = run_cli(prepare_argv(project, tmp_path), capsys)
    one_line(code, err, tmp_path / folder / name, what, kept.format(work=tmp_path / "work"))
    monkeypatch.undo()
    no_temporary_files(tmp_path)
    assert not (tmp_path / "shards" / "manifest.json").exists()  # an incomplete folder never looks complete
    code, err = run_cli(prepare_argv(project, tmp_path), capsys)  # space freed: the same command
    assert code == 0, err
    assert digests(tmp_path / "shards") == digests(project / "shards") | {"manifest.json": ANY}
    assert manifest(tmp_path / "shards") == manifest(project / "shards")
    assert not (tmp_path / "work").exists()


def manifest(folder):
    m = json.loads((folder / "manifest.json").read_text())
    m["corpus"].pop("seconds")
    return m


def test_a_tokenizer_that_does_not_fit_is_one_line(project, tmp_path, capsys, monkeypatch):
    fill_disk(monkeypatch, "tokenizer.model")
    out = tmp_path / "tok" / "tokenizer.model"
    code, err = run_cli(["tokenizer", "--config", str(project / "config.yaml"), "--out", str(out)], capsys)
    one_line(code, err, out, "tokenizer", str(out))
    no_temporary_files(tmp_path)
    assert not out.exists()


# ---------------------------------------------------------------- results, tables, plots


def evaluate_argv(project, out):
    return ["evaluate", "--model-dir", str(project / "model"), "--data", str(project / "shards"), "--out", str(out),
            "--multiples", "1", "--no-progress"]


RESULT_KEPT = "the model and earlier results are kept; free space and rerun"


def test_an_evaluation_result_that_does_not_fit_is_one_line_and_the_old_result_stays(project, tmp_path, capsys,
                                                                                    monkeypatch):
    out = tmp_path / "eval" / "e.json"
    out.parent.mkdir()
    out.write_text("previous result")
    fill_disk(monkeypatch, "e.json")
    code, err = run_cli(evaluate_argv(project, out), capsys)
    one_line(code, err, out, "evaluation result", RESULT_KEPT)
    monkeypatch.undo()
    no_temporary_files(tmp_path)
    assert out.read_text() == "previous result"
    code, err = run_cli(evaluate_argv(project, out), capsys)
    assert code == 0 and json.loads(out.read_text())["results"][0]["ev"] == 1


def test_a_result_in_a_folder_without_write_permission_is_one_line(project, tmp_path, capsys, monkeypatch):
    out = tmp_path / "eval" / "e.json"
    out.parent.mkdir()
    out.write_text("previous result")
    if os.geteuid() == 0:  # root writes into a read-only folder anyway: the creation of the file fails as it would
        import tempfile

        def refused(*a, **kw):
            raise EACCES

        monkeypatch.setattr(tempfile, "mkstemp", refused)
    else:
        out.parent.chmod(0o555)
    try:
        code, err = run_cli(evaluate_argv(project, out), capsys)
    finally:
        out.parent.chmod(0o755)
    one_line(code, err, out.parent if os.geteuid() else out, "evaluation result",
             "the model and earlier results are kept; make it writable and rerun", "permission denied")
    assert out.read_text() == "previous result"
    no_temporary_files(tmp_path)


def report_project(tmp_path):
    from conftest import write_config
    from test_tables import fixture_config, write_results

    cfg = write_config(tmp_path / "config.yaml", seeds=[1, 2, 3])
    return cfg, write_results(tmp_path / "res", fixture_config())


@pytest.mark.parametrize("command, name, what", [("tables", "section41.tex", "table section41.tex"),
                                                 ("plots", "loss_vs_length.png", "plot loss_vs_length.png"),
                                                 ("plots", "loss_vs_length.pdf", "plot loss_vs_length.pdf")])
def test_a_table_or_plot_that_does_not_fit_is_one_line_and_the_previous_one_stays(command, name, what, tmp_path,
                                                                                  capsys, monkeypatch):
    cfg, index = report_project(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / name).write_bytes(b"the previous file")
    fill_disk(monkeypatch, name)
    code, err = run_cli([command, "--config", cfg, "--index", str(index), "--out", str(tmp_path / "out")], capsys)
    one_line(code, err, tmp_path / "out" / name, what, "results are kept; free space and rerun")
    monkeypatch.undo()
    no_temporary_files(tmp_path)
    assert (tmp_path / "out" / name).read_bytes() == b"the previous file"


# ---------------------------------------------------------------- a real full disk: a small tmpfs (root only)


@pytest.fixture
def small_disk(tmp_path):
    """mount(size) -> a tmpfs folder of that many bytes; remount(size) grows it; unmounted at the end."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    mounted = []

    def mount(size: int) -> Path:
        opts = f"size={size}" if not mounted else f"remount,size={size}"
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mnt)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"mount -t tmpfs failed: {r.stderr.strip() or r.returncode}")
        mounted.append(size)
        return mnt

    try:
        yield mount
    finally:
        if mounted:
            subprocess.run(["umount", str(mnt)], check=True)


def test_a_checkpoint_folder_on_a_full_tmpfs_ends_in_one_line_and_resumes_bit_identical_once_it_grows(
        shards, tmp_path, reference, small_disk, capsys):
    import shutil

    from expe.io import verify_checksum

    ckpt = (reference.parent / "ref_c" / "step-00000012.pt").stat().st_size
    disk = small_disk(int(1.5 * ckpt) + 64 * 1024)  # one checkpoint, its metrics and log, half another
    argv = ["train", "--spec", json.dumps(tiny_spec()), "--data", str(shards), "--out", str(tmp_path / "m"),
            "--checkpoints", str(disk / "c"), "--no-progress"]
    code, err = run_cli(argv, capsys)
    line = one_line(code, err, disk / "c" / "step-00000008.pt", "checkpoint step 8", "step 4 is kept")
    free = int(re.search(r"\((\d+) kB free, 0\.\d MB needed\)", line)[1]) * 1024
    assert free == pytest.approx(shutil.disk_usage(disk).free, abs=8 * 1024)  # what the disk reports once the
    assert 0.3 * ckpt < free < ckpt  # partial file is gone: the half checkpoint of room, not 0
    verify_checksum(disk / "c" / "step-00000004.pt", "checkpoint")  # the previous one is intact
    assert sorted(p.name for p in (disk / "c").iterdir()) == [
        ".lock", "metrics.jsonl", "step-00000004.pt", "step-00000004.pt.sha256", "train.log"]  # no partial file
    small_disk(3 * ckpt + 64 * 1024)  # space freed
    code, err = run_cli(argv, capsys)
    assert code == 0, err
    same_weights(reference / "model.safetensors", tmp_path / "m" / "model.safetensors")
    assert losses(tmp_path / "m" / "metrics.jsonl") == losses(reference / "metrics.jsonl")


def test_a_log_line_that_does_not_fit_is_dropped_without_a_traceback(shards, tmp_path, reference, capsys, monkeypatch):
    """<checkpoints>/train.log is a convenience copy of the log: a full disk there costs log lines, not
    the run, and prints no logging traceback (a checkpoint or metrics write reports a full disk)."""
    fill_disk(monkeypatch, "train.log")
    code, err = run_cli(train_argv(shards, tmp_path), capsys)
    assert code == 0 and not [ln for ln in err if "Traceback" in ln or "Logging error" in ln], err
    monkeypatch.undo()
    ends_like(reference, tmp_path)
