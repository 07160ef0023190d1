"""Synthetic recall tasks (copy, MQAR), their extrapolation eval sets and grid, and the accuracy scorer.

Chance-level checks allow 4 binomial standard deviations: |acc - chance| <= 4 sqrt(chance (1 - chance) / N)
over the N scored targets (the draws are seeded, so the tests are deterministic)."""

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

try:
    from expe.data import synthetic as S
except ImportError:  # until src/expe/data/__init__.py exists, expe/data.py shadows the folder
    _spec = importlib.util.spec_from_file_location(
        "expe_data_synthetic", Path(__file__).resolve().parents[1] / "src/expe/data/synthetic.py")
    S = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(S)

torch.set_num_threads(1)
V, L, SEG, PAIRS = 64, 64, 16, 8


def scored(y):
    return np.flatnonzero(y != S.IGNORE)


def onehot(pred, vocab=V):
    return torch.nn.functional.one_hot(torch.as_tensor(pred, dtype=torch.long), vocab).float()


def copy_oracle(distance):
    """Looks back: predicts token p + 1 as the token `distance` before it (per row, or one for all)."""
    def fn(x):
        d = np.broadcast_to(np.asarray(distance), (x.shape[0],))[:, None]
        src = np.arange(x.shape[1])[None, :] + 1 - d
        return onehot(np.take_along_axis(x.numpy(), np.clip(src, 0, None), 1))
    return fn


def mqar_oracle(x):
    """Predicts the token after the first earlier occurrence of the current token (a key's pair)."""
    x = x.numpy()
    T = x.shape[1]
    same = (x[:, :, None] == x[:, None, :]) & (np.arange(T)[None, None, :] < np.arange(T)[None, :, None])
    first = same.argmax(2)  # first q < p with x[q] == x[p] (0 when none)
    return onehot(np.take_along_axis(x, np.minimum(first + 1, T - 1), 1))


def tolerance(chance, n):
    return 4 * math.sqrt(chance * (1 - chance) / n)


# ---------------------------------------------------------------------------------------------- copy

def test_copy_batches_repeat_one_span_and_score_its_predictable_tokens():
    task = S.CopyTask(V, L, SEG, seed=0)
    for step in range(12):
        for micro in range(2):
            x, y, dist, first = task.sample(step, micro, 32)
            assert x.shape == y.shape == (32, L) and x.dtype == y.dtype == np.int64
            assert x.min() >= 0 and x.max() < V
            for r in range(32):
                a, d = int(first[r]), int(dist[r])
                second = a + d
                assert SEG <= d and second + SEG <= L
                assert np.array_equal(x[r, a : a + SEG], x[r, second : second + SEG])
                p = scored(y[r])
                # target at p is token p + 1: exactly the 2nd..SEG-th tokens of the second copy are scored
                assert p.tolist() == list(range(second, second + SEG - 1))
                assert np.array_equal(y[r, p], x[r, p + 1])
                assert np.all((p + 1 > second) & (p + 1 < second + SEG))
                assert y[r, second - 1] == S.IGNORE  # the copy's first token cannot be predicted


def test_copy_covers_every_distance_and_placement():
    task = S.CopyTask(V, 24, 4, seed=1)
    seen = set()
    for step in range(8):
        _, _, d, a = task.sample(step, 0, 1024)
        seen |= set(zip(d.tolist(), a.tolist()))
    assert seen == {(d, a) for d in range(4, 21) for a in range(0, 24 - 4 - d + 1)}
    ds, firsts = zip(*[task.sample(s, 1, 256)[2:] for s in range(4)])
    d, a = np.concatenate(ds), np.concatenate(firsts)
    assert (d.min(), d.max(), a.min(), a.max()) == (4, 20, 0, 16)
    big = S.CopyTask(V, L, SEG, seed=1)
    d = np.concatenate([big.sample(s, 0, 512)[2] for s in range(2)])
    assert (d.min(), d.max()) == big.distances == (SEG, L - SEG)


def test_copy_is_a_pure_function_of_seed_step_micro():
    a, b, c = S.CopyTask(V, L, SEG, 7), S.CopyTask(V, L, SEG, 7), S.CopyTask(V, L, SEG, 8)
    for x, y in zip(a.batch(3, 1, 8), b.batch(3, 1, 8)):
        assert np.array_equal(x, y)
    assert not np.array_equal(a.batch(3, 1, 8)[0], c.batch(3, 1, 8)[0])
    assert not np.array_equal(a.batch(3, 1, 8)[0], a.batch(3, 0, 8)[0])
    assert not np.array_equal(a.batch(3, 1, 8)[0], a.batch(4, 1, 8)[0])
    assert json.loads(json.dumps(a.describe()))["segment"] == SEG and a.chance == 1 / V


def test_copy_eval_places_the_repeat_where_asked_including_beyond_L():
    for window, d, f in [(L, 16, 0), (4 * L, 32, 4 * L - 48), (4 * L, 3 * L, 5), (16 * L, 16 * L - SEG, 0)]:
        x, y = S.copy_eval(V, window, d, f, SEG, n=8, seed=0)
        assert x.shape == (8, window)
        assert np.array_equal(x[:, f : f + SEG], x[:, f + d : f + d + SEG])
        for r in range(8):
            assert scored(y[r]).tolist() == list(range(f + d, f + d + SEG - 1))
            assert np.array_equal(y[r, f + d : f + d + SEG - 1], x[r, f + d + 1 : f + d + SEG])


# ---------------------------------------------------------------------------------------------- MQAR

def test_mqar_layout_and_answers():
    task = S.MQARTask(V, L, PAIRS, seed=0)
    dist = []
    for step in range(4):
        x, y = task.batch(step, 0, 256)
        assert x.shape == y.shape == (256, L) and x.dtype == y.dtype == np.int64
        keys, values = x[:, 0 : 2 * PAIRS : 2], x[:, 1 : 2 * PAIRS : 2]
        assert keys.min() >= 1 and keys.max() < V // 2 and values.min() >= V // 2 and values.max() < V
        for r in range(256):
            assert len(set(keys[r])) == PAIRS and len(set(values[r])) == PAIRS
            p = scored(y[r])
            assert len(p) == PAIRS and np.all(p >= 2 * PAIRS) and np.all((p - 2 * PAIRS) % 2 == 0)
            assert sorted(x[r, p]) == sorted(keys[r])  # every key queried exactly once
            for q in p:
                k = np.flatnonzero(x[r, :q] == x[r, q])
                assert len(k) == 1 and k[0] < 2 * PAIRS  # the key's only earlier occurrence is its pair
                assert y[r, q] == x[r, k[0] + 1]
                dist.append(q - k[0])
    assert (min(dist), max(dist)) == task.distances == (2, L - 2)  # queries reach over the whole window
    assert task.chance == 1 / (V - V // 2)


def test_mqar_is_a_pure_function_of_seed_step_micro():
    a, b = S.MQARTask(V, L, PAIRS, 3), S.MQARTask(V, L, PAIRS, 4)
    assert np.array_equal(a.batch(1, 2, 4)[0], a.batch(1, 2, 4)[0])
    assert np.array_equal(a.batch(1, 2, 4)[1], a.batch(1, 2, 4)[1])
    assert not np.array_equal(a.batch(1, 2, 4)[0], b.batch(1, 2, 4)[0])
    assert json.loads(json.dumps(a.describe()))["num_pairs"] == PAIRS


@pytest.mark.parametrize("window,distance,key", [(L, 16, 14), (4 * L, 48, 4 * L - 50), (4 * L, 3 * L, 2), (L, 2, 60)])
def test_mqar_eval_queries_the_key_at_the_requested_distance(window, distance, key):
    x, y = S.mqar_eval(V, window, distance, key, PAIRS, n=32, seed=0)
    assert x.shape == (32, window)
    for r in range(32):
        assert scored(y[r]).tolist() == [key + distance]
        assert x[r, key + distance] == x[r, key] and np.flatnonzero(x[r] == x[r, key])[0] == key
        assert 1 <= x[r, key] < V // 2 and y[r, key + distance] == x[r, key + 1] >= V // 2


# ---------------------------------------------------------------------------------------------- grid

def test_grid_cells_separate_far_position_from_far_distance():
    cells = S.eval_grid(L, [1, 2, 4, 8, 16], SEG)
    assert {c.kind for c in cells} == {"inside L", "far position", "far distance"}
    for k in (1, 2, 4, 8, 16):
        mine = [c for c in cells if c.window == k * L]
        assert 3 <= len(mine) <= 8
        assert all(c.first_start + c.distance + SEG <= c.window for c in mine)
    for c in cells:
        if c.kind == "inside L":
            assert c.first_start == 0 and SEG <= c.distance <= L - SEG
        elif c.kind == "far position":
            assert c.first_start >= L and c.distance <= L - SEG  # every token of both copies beyond L
        else:
            assert c.distance > L
    assert not [c for c in cells if c.window == L and c.kind != "inside L"]
    for c in S.mqar_grid(L, [1, 2, 4, 8, 16], PAIRS):
        assert c.distance % 2 == 0 and c.first_start + c.distance < c.window
        if c.kind == "far position":
            assert c.first_start - 2 * (PAIRS - 1) >= L and c.distance <= L  # the whole block beyond L
        elif c.kind == "far distance":
            assert c.distance > L


# ---------------------------------------------------------------------------------------------- scoring

def test_oracle_scores_everything_on_training_batches_and_every_cell():
    x, y, d, _ = S.CopyTask(V, L, SEG, 0).sample(0, 0, 64)
    assert S.accuracy(copy_oracle(d), x, y, batch_size=64) == {"correct": 64 * 15, "total": 64 * 15, "accuracy": 1.0}
    x, y = S.MQARTask(V, L, PAIRS, 0).batch(0, 0, 64)
    assert S.accuracy(lambda t: mqar_oracle(t), x, y, batch_size=16)["accuracy"] == 1.0
    for c in S.eval_grid(L, [1, 2, 4, 8, 16], SEG):
        x, y = S.copy_eval(V, c.window, c.distance, c.first_start, SEG, n=4, seed=1)
        assert S.accuracy(copy_oracle(c.distance), x, y, batch_size=2)["accuracy"] == 1.0, c
    for c in S.mqar_grid(L, [1, 2, 4, 8], PAIRS):
        x, y = S.mqar_eval(V, c.window, c.distance, c.first_start, PAIRS, n=4, seed=1)
        assert S.accuracy(mqar_oracle, x, y)["accuracy"] == 1.0, c


def test_scorers_without_the_past_are_at_chance():
    g = torch.Generator().manual_seed(0)
    half = V // 2
    copy, mqar = S.CopyTask(V, L, SEG, 2), S.MQARTask(V, L, PAIRS, 2)
    cases = [
        (copy, lambda t: torch.rand(*t.shape, V, generator=g)),  # uniform guess
        (copy, lambda t: onehot(np.full(t.shape, 5))),  # unigram: copied tokens are uniform, so any constant
        (copy, lambda t: onehot((t.numpy() + 1) % V)),  # sees only the current token
        (mqar, lambda t: torch.cat([torch.zeros(*t.shape, half), torch.rand(*t.shape, half, generator=g)], -1)),
        (mqar, lambda t: onehot(np.full(t.shape, V - 1))),
        (mqar, lambda t: onehot(half + t.numpy() % half)),  # maps the query key to a value
    ]
    for task, fn in cases:
        x, y = task.batch(0, 0, 512)
        r = S.accuracy(fn, x, y, batch_size=128)
        assert abs(r["accuracy"] - task.chance) <= tolerance(task.chance, r["total"]), (task.describe(), r)


def test_per_sequence_accuracy_adds_up():
    x, y, d, _ = S.CopyTask(V, L, SEG, 0).sample(0, 0, 10)
    d[:3] += 1  # a wrong distance for three rows
    c, t = S.accuracy_per_sequence(copy_oracle(d), x, y, batch_size=10)
    assert c.shape == t.shape == (10,) and np.all(t == SEG - 1) and np.all(c[3:] == SEG - 1) and np.all(c[:3] < 5)
    r = S.accuracy(copy_oracle(d), x, y, batch_size=10)
    assert (r["correct"], r["total"]) == (c.sum(), t.sum())


# ---------------------------------------------------------------------------------------------- errors

@pytest.mark.parametrize("make,match", [
    (lambda: S.CopyTask(V, 30, 16, 0), "segment 16 too long"),
    (lambda: S.CopyTask(V, L, 1, 0), "segment must be"),
    (lambda: S.MQARTask(V, 16, 8, 0), "num_pairs 8 too many"),
    (lambda: S.MQARTask(16, L, 8, 0), "vocab_size 16 too small"),
    (lambda: S.copy_eval(V, L, 8, 0, SEG, 1, 0), "distance 8 must be at least segment"),
    (lambda: S.copy_eval(V, L, 40, 10, SEG, 1, 0), "exceeds window"),
    (lambda: S.mqar_eval(V, L, 7, 14, PAIRS, 1, 0), "distance must be even"),
    (lambda: S.mqar_eval(V, L, 4, 0, PAIRS, 1, 0), "no pair fits"),
    (lambda: S.mqar_eval(V, L, 60, 10, PAIRS, 1, 0), "must lie in"),
])
def test_bad_arguments_name_the_argument(make, match):
    with pytest.raises(ValueError, match=match):
        make()
