"""The recall study: copy-augmented language-model windows, the task a spec names, the positive-control
rule of the recall tables (a model that did not learn a task inside L is never read as failing to
extrapolate), the decision of which seeds get a longer run, and the workflow's `recall` target."""

import json
from pathlib import Path

import numpy as np
import pytest

from expe import config as C
from expe.data import synthetic as S
from expe.report import recall as R
from expe.report.render import Est
from expe.report.results import Results
from expe.workflow import Plan

from conftest import REPO, job_counts, smk


class Windows:
    """A stand-in for WindowSampler: random windows of length + 1 tokens, a pure function of (seed, step, micro)."""

    def __init__(self, length=64, seed=5, vocab=1000):
        self.length, self.seed, self.vocab = length, seed, vocab

    def batch(self, step, micro, batch_size):
        return np.random.default_rng([self.seed, step, micro]).integers(0, self.vocab, (batch_size, self.length + 1))


# ---------------------------------------------------------------------------------------------- data

@pytest.mark.parametrize("fraction,batch", [(0.5, 32), (0.25, 16), (1.0, 8), (0.0, 8)])
def test_copy_augmented_repeats_an_earlier_span_of_the_same_window_in_the_requested_fraction(fraction, batch):
    plain, seg = Windows(), 16
    aug = S.CopyAugmented(plain, fraction=fraction, segment=seg)
    for step in range(5):
        x, rows, d, first = aug.sample(step, 1, batch)
        original = plain.batch(step, 1, batch)
        assert x.shape == original.shape == (batch, 65)
        assert len(rows) == round(fraction * batch) == len(set(rows.tolist()))  # exactly that many windows
        others = np.setdiff1d(np.arange(batch), rows)
        assert np.array_equal(x[others], original[others])  # the rest are the corpus windows untouched
        for r, dist, a in zip(rows, d, first):
            assert seg <= dist <= 64 - seg and a + dist + seg <= 64  # inside the window's inputs
            assert np.array_equal(x[r, a + dist : a + dist + seg], x[r, a : a + seg])  # the later span repeats ...
            assert np.array_equal(x[r, a : a + seg], original[r, a : a + seg])  # ... an earlier span of itself
            keep = np.r_[0 : a + dist, a + dist + seg : 65]
            assert np.array_equal(x[r, keep], original[r, keep])  # and nothing else changed
        assert np.array_equal(aug.batch(step, 1, batch), S.CopyAugmented(plain, fraction, seg).batch(step, 1, batch))


def test_copy_augmented_is_a_pure_function_of_seed_step_micro():
    a = S.CopyAugmented(Windows(seed=5), 0.5, 8)
    assert np.array_equal(a.batch(3, 0, 16), a.batch(3, 0, 16))
    assert not np.array_equal(a.sample(3, 0, 16)[1], a.sample(4, 0, 16)[1]) or not np.array_equal(
        a.sample(3, 0, 16)[2], a.sample(4, 0, 16)[2])
    assert not np.array_equal(a.batch(3, 0, 16), a.batch(3, 1, 16))
    assert not np.array_equal(a.batch(3, 0, 16), S.CopyAugmented(Windows(seed=6), 0.5, 8).batch(3, 0, 16))
    with pytest.raises(ValueError, match="fraction"):
        S.CopyAugmented(Windows(), 1.5, 8)
    with pytest.raises(ValueError, match="segment 40"):
        S.CopyAugmented(Windows(), 0.5, 40)


def test_a_spec_task_builds_its_generator_and_held_out_sequences_are_not_training_batches():
    copy = S.make_task({"kind": "copy", "vocab_size": 32, "segment": 8}, 64, seed=2)
    mqar = S.make_task({"kind": "mqar", "vocab_size": 32, "num_pairs": 4}, 64, seed=2)
    assert (copy.segment, copy.vocab_size, mqar.num_pairs, mqar.seq_len) == (8, 32, 4, 64)
    x, y = S.in_distribution(copy, 16)
    assert x.shape == (16, 64) and ((y != S.IGNORE).sum(1) == 7).all()
    assert not any(np.array_equal(x, copy.batch(s, 0, 16)[0]) for s in range(50))
    with pytest.raises(ValueError, match="kind"):
        S.make_task({"kind": "sort", "vocab_size": 32}, 64, 0)


# ---------------------------------------------------------------------------------------------- the control rule

def _result(inside, far, steps=100, L=64):
    """A recall-eval result: in-distribution accuracy `inside`, every far cell at accuracy `far`."""
    cells = []
    for c in S.eval_grid(L, [1, 2, 4], 16):
        acc = inside if c.kind == "inside L" else far
        cells.append({**c._asdict(), "ev": c.window // L, "correct": int(round(acc * 64 * 15)), "total": 64 * 15,
                      "sequences": 64, "accuracy": acc, "exact": 0})
    return {"task": {"task": "copy"}, "train_length": L, "seed": 1, "chance": 1 / 64, "steps": steps,
            "in_distribution": {"correct": int(round(inside * 256 * 15)), "total": 256 * 15, "sequences": 256,
                                "accuracy": inside, "exact": 0}, "cells": cells}


@pytest.fixture
def fixture_results(tmp_path):
    """Three encodings: one learned (every seed), one never (7% inside L), one in 2 of 3 seeds."""
    accuracy = {"Learns": [(0.99, 0.5)] * 3, "Never": [(0.06, 0.02), (0.08, 0.03), (0.07, 0.01)],
                "Mixed": [(0.97, 0.8), (0.95, 0.6), (0.2, 0.01)]}
    runs = {}
    for label, per_seed in accuracy.items():
        seeds = {}
        for seed, (inside, far) in enumerate(per_seed, start=1):
            f = tmp_path / f"{label}-{seed}.json"
            f.write_text(json.dumps(_result(inside, far)))
            seeds[str(seed)] = str(f)
        runs[label] = {"model": f"recall-copy-{label.lower()}", "seeds": seeds}
    index = {"models": {}, "eval": {}, "recall": {"copy": {"learned": str(tmp_path / "learned.json"),
                                                           "runs": {"first": runs, "longer": {}}}}}
    config = {"recall": {"threshold": 0.9, "multiples": [1, 2, 4], "tasks": {"copy": {"kind": "copy"}},
                         "train": {"seq_len": 64}, "longer": {"factor": 3, "max_seeds": 1, "enabled": True}}}
    return Results(index, root="/"), config, runs


def test_an_encoding_that_did_not_learn_inside_L_reads_not_learned_in_every_far_cell(fixture_results):
    res, config, _ = fixture_results
    t = R.task_table(res.recall, "copy", ["Learns", "Never", "Mixed"], config, "fixture")
    rows = {row[0]: row for row in t.rows}
    far = slice(4, None)
    assert len(t.columns[far]) == 4  # far position and far distance at 2L and 4L
    assert all(c == "not learned in training (7% inside L)" for c in rows["Never"][far])
    assert isinstance(rows["Never"][2], Est) and rows["Never"][3] == "0/3"  # the control itself is a number
    assert all(isinstance(c, Est) and c.mean == pytest.approx(0.5, abs=1e-3) and c.n == 3 for c in rows["Learns"][far])
    # a seed below the threshold leaves the mean over the seeds that learned: the far cells are theirs
    assert rows["Mixed"][3] == "2/3"
    assert all(isinstance(c, Est) and c.n == 2 and c.mean == pytest.approx(0.7, abs=1e-3) for c in rows["Mixed"][far])
    md = t.markdown()
    assert md.count("not learned in training (7% inside L)") == 4 and "chance 0.016" in md


def test_the_seeds_below_the_threshold_get_the_longer_run(fixture_results, tmp_path):
    _, config, runs = fixture_results
    learned = R.learned_seeds({label: r["seeds"] for label, r in runs.items()}, threshold=0.9)
    assert {k: v["below"] for k, v in learned["labels"].items()} == {"Learns": [], "Never": [1, 2, 3], "Mixed": [3]}
    plan = Plan(C.validate(C.read_yaml(REPO / "config" / "config.yaml")))
    below = {"NoPE": [1, 3], "RoPE": []}
    assert plan.config["recall"]["longer"]["max_seeds"] == 1  # the default: one longer run per encoding
    assert plan.longer_results("copy", below) == [plan.recall_result("recall-copy-nope-x3", 1)]
    plan.config["recall"]["longer"]["max_seeds"] = None
    assert plan.longer_results("copy", below) == [plan.recall_result("recall-copy-nope-x3", s) for s in (1, 3)]
    spec = C.recall_spec(plan.config, "recall-copy-nope-x3", 1)
    assert spec["train"]["steps"] == 3 * C.recall_spec(plan.config, "recall-copy-nope", 1)["train"]["steps"]


def test_cells_frame_states_both_intervals(fixture_results):
    res, _, _ = fixture_results
    cells = R.cells_frame(res.recall, 0.9)
    row = cells[(cells.label == "Mixed") & (cells.kind == "far position") & (cells.ev == 2)].iloc[0]
    assert row.seeds == 3 and row.seeds_learned == 2 and row.mean_learned == pytest.approx(0.7, abs=1e-3)
    assert row.wilson_lo < row.wilson_p < row.wilson_hi and row.sequences == 3 * 64


# ---------------------------------------------------------------------------------------------- workflow

@pytest.mark.slow
def test_recall_dry_run_plans_every_task_model_and_the_copy_augmented_models(tmp_path):
    cfg = C.validate(C.read_yaml(REPO / "config" / "config.yaml"))
    r = cfg["recall"]
    counts = job_counts(smk("-n", "recall", "--cores", "2", cwd=tmp_path).stdout)
    task_models = len(r["tasks"]) * len(r["encodings"]) * len(r["seeds"])
    lms = 2 * sum(len(C.seeds(cfg, m)) for m in C.augmented_models(cfg))  # plain and copy-augmented, own seeds
    assert counts["train"] == task_models + lms and counts["recall_eval"] == task_models
    assert counts["recall_learned"] == len(r["tasks"]) and counts["recall_tables"] == 1
    assert counts["evaluate"] == lms and counts["probes"] == lms


def test_a_task_model_trains_without_a_corpus_logs_its_accuracy_and_is_scored_on_the_grid(tmp_path):
    from expe.evaluation.recall import evaluate_recall
    from expe.training.loop import train

    from conftest import tiny_spec

    spec = {**tiny_spec("recall-copy-rope", pe={"name": "rope"}, steps=6, log_every=2),
            "task": {"kind": "copy", "vocab_size": 16, "segment": 4}}
    train(spec, None, tmp_path / "m", tmp_path / "ckpt", progress=False)
    rows = [json.loads(x) for x in (tmp_path / "m" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(0 <= r["accuracy"] <= 1 for r in rows)  # argmax matches on the scored targets
    assert json.loads((tmp_path / "m" / "config.json").read_text())["task"] == spec["task"]
    r = evaluate_recall(tmp_path / "m", [1, 2], trials=3, in_distribution_trials=5, batch_size=4)
    assert r["in_distribution"]["sequences"] == 5 and r["in_distribution"]["total"] == 5 * 3
    assert [(c["kind"], c["window"], c["distance"]) for c in r["cells"]] == [
        (c.kind, c.window, c.distance) for c in S.eval_grid(16, [1, 2], 4)]
    assert all(c["sequences"] == 3 and c["total"] == 3 * 3 for c in r["cells"]) and r["chance"] == 1 / 16
