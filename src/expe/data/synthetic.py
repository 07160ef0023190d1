"""Synthetic recall tasks for the extrapolation study: retrieval that needs position, generated from
a seed (no files), plus evaluation sets that separate "far position" from "far distance".

    CopyTask   random tokens, one span of `segment` tokens repeated D tokens later; the repeat is scored
    MQARTask   multi-query associative recall (Zoology, Arora et al. 2023): key-value pairs, then queries

    make_task      the task a training spec names ({"kind": "copy" | "mqar", ...sizes})
    CopyAugmented  language-model windows of which a fraction repeat an earlier span of the same window

All follow WindowSampler's contract: batch (step, micro) is a pure function of (seed, step, micro).
Unlike WindowSampler, `.batch` returns (inputs, targets), both (B, T) int64; targets[p] is what the
model should predict after reading inputs[: p + 1], and -100 (PyTorch's ignore_index) is not scored.

Evaluation (window W a multiple of the training length L):
    "inside L"      distance D <= L - span at the start of the window (in-distribution control; for a
                    causal model the tokens after the repeat change nothing, so it equals W = L)
    "far position"  the same D, with every token of the repeat at a position >= L
    "far distance"  D > L (so the repeat also sits beyond L: D > L cannot be separated from that)
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
import torch

from expe.nn.model import IGNORE  # the training loss's unscored target (F.cross_entropy's default)
_EVAL = 0x5EED_E7A1  # eval streams are keyed [seed, _EVAL, ...] so they never equal a training [seed, step, micro]


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


# ---------------------------------------------------------------------------------------------- copy

def _copy_rows(rng: np.random.Generator, vocab_size: int, window: int, segment: int,
               distance: np.ndarray, first: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of random tokens; tokens [first, first + segment) repeated at first + distance.
    Scored: the 2nd..segment-th tokens of the second copy. Its 1st token is not scored: nothing
    before it says a copy starts there, so it is as unpredictable as any random token."""
    B = len(distance)
    x = rng.integers(0, vocab_size, size=(B, window), dtype=np.int64)
    rows, j = np.arange(B)[:, None], np.arange(segment)[None, :]
    src = first[:, None] + j
    x[rows, src + distance[:, None]] = x[rows, src]
    y = np.full((B, window), IGNORE, dtype=np.int64)
    p = (first + distance)[:, None] + j[:, :-1]  # target at p is token p + 1: positions 2..segment of the copy
    y[rows, p] = x[rows, p + 1]
    return x, y


class CopyTask:
    """Random tokens with one span of `segment` tokens repeated at distance D (the second copy starts
    D tokens after the first starts). D is uniform on [segment, seq_len - segment], then the first
    copy's start uniform over every placement that fits, so each trained distance has equal weight
    (uniform over (D, start) pairs would make the longest distance seq_len - 2 segment + 1 times rarer than the shortest)."""

    def __init__(self, vocab_size: int, seq_len: int, segment: int, seed: int):
        _check(vocab_size >= 2, f"vocab_size must be at least 2, got {vocab_size}")
        _check(segment >= 2, f"segment must be at least 2 (its first token is never scored), got {segment}")
        _check(2 * segment <= seq_len, f"segment {segment} too long for seq_len {seq_len} (need 2 * segment <= seq_len)")
        self.vocab_size, self.seq_len, self.segment, self.seed = vocab_size, seq_len, segment, seed

    @property
    def chance(self) -> float:
        return 1.0 / self.vocab_size  # copied tokens are uniform over the vocabulary

    @property
    def distances(self) -> tuple[int, int]:
        return self.segment, self.seq_len - self.segment  # trained distance range, both ends included

    def sample(self, step: int, micro: int, batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(inputs, targets, distance, first_start): the batch and, per row, where its copies sit."""
        rng = np.random.default_rng([self.seed, step, micro])
        lo, hi = self.distances
        d = rng.integers(lo, hi + 1, size=batch_size)
        first = rng.integers(0, self.seq_len - self.segment - d + 1)  # every start that fits this distance
        return *_copy_rows(rng, self.vocab_size, self.seq_len, self.segment, d, first), d, first

    def batch(self, step: int, micro: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        return self.sample(step, micro, batch_size)[:2]

    def describe(self) -> dict:
        return {"task": "copy", "vocab_size": self.vocab_size, "seq_len": self.seq_len, "segment": self.segment,
                "seed": self.seed, "distances": list(self.distances), "scored_per_sequence": self.segment - 1,
                "chance": self.chance}


def copy_eval(vocab_size: int, window: int, distance: int, first_start: int, segment: int, n: int,
              seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n sequences of `window` tokens: first copy at first_start, second at first_start + distance."""
    _check(segment >= 2, f"segment must be at least 2, got {segment}")
    _check(distance >= segment, f"distance {distance} must be at least segment {segment} (the copies may not overlap)")
    _check(first_start >= 0, f"first_start must be >= 0, got {first_start}")
    _check(first_start + distance + segment <= window,
           f"first_start {first_start} + distance {distance} + segment {segment} exceeds window {window}")
    rng = np.random.default_rng([seed, _EVAL, 0, window, distance, first_start])
    d, f = np.full(n, distance), np.full(n, first_start)
    return _copy_rows(rng, vocab_size, window, segment, d, f)


# ---------------------------------------------------------------------------------------------- MQAR

def _distinct(rng: np.random.Generator, low: int, high: int, B: int, k: int) -> np.ndarray:
    """k distinct integers from [low, high) per row."""
    return rng.random((B, high - low)).argsort(axis=1)[:, :k] + low


def _mqar_rows(rng: np.random.Generator, vocab_size: int, window: int, num_pairs: int, block: np.ndarray,
               query: np.ndarray, scored: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows with the key-value block at `block` (B,) and key i queried at query[:, i] (-1: not queried);
    the answer to a query is scored where `scored` (B, num_pairs) is true."""
    B, n, half = len(block), num_pairs, vocab_size // 2
    keys = _distinct(rng, 1, half, B, n)  # as Zoology: keys from [1, V/2), token 0 never a key
    values = _distinct(rng, half, vocab_size, B, n)  # values from [V/2, V), distinct within a row
    # filler uniform over the vocabulary minus this row's keys: a key appears only in the block and as a query
    x = rng.integers(0, vocab_size - n, size=(B, window), dtype=np.int64)
    for k in np.sort(keys, axis=1).T:  # ascending skip-over maps [0, V - n) onto the vocabulary without the keys
        x += x >= k[:, None]
    rows = np.arange(B)[:, None]
    kpos = block[:, None] + 2 * np.arange(n)[None, :]
    x[rows, kpos], x[rows, kpos + 1] = keys, values
    y = np.full((B, window), IGNORE, dtype=np.int64)
    r, i = np.nonzero(query >= 0)
    x[r, query[r, i]] = keys[r, i]
    r, i = np.nonzero(scored)
    y[r, query[r, i]] = values[r, i]  # as Zoology, the answer is a target only: the next input is filler
    return x, y


class MQARTask:
    """Zoology's multi-query associative recall (zoology/data/multiquery_ar.py), layout kept:
    `num_pairs` (key, value) pairs in positions [0, 2 num_pairs), then every key queried once at an even
    offset 2g after the block (g distinct per row); the target at a query is its value.
    Differences, each so that distance is the only thing that varies: query slots are uniform over the
    window (Zoology's power_a = 1; its default 0.01 puts most queries right after the block), and the
    filler never contains this row's keys (Zoology's random filler can, which makes a key's first pair
    ambiguous unless the model uses the block's absolute position)."""

    def __init__(self, vocab_size: int, seq_len: int, num_pairs: int, seed: int):
        _check(num_pairs >= 1, f"num_pairs must be at least 1, got {num_pairs}")
        _check(vocab_size // 2 - 1 >= num_pairs,
               f"vocab_size {vocab_size} too small for {num_pairs} distinct keys (need vocab_size // 2 - 1 >= num_pairs)")
        _check(4 * num_pairs <= seq_len, f"num_pairs {num_pairs} too many for seq_len {seq_len} (need 4 * num_pairs <= seq_len)")
        self.vocab_size, self.seq_len, self.num_pairs, self.seed = vocab_size, seq_len, num_pairs, seed

    @property
    def chance(self) -> float:
        return 1.0 / (self.vocab_size - self.vocab_size // 2)  # a guess among the possible values

    @property
    def distances(self) -> tuple[int, int]:
        return 2, 2 * ((self.seq_len - 1) // 2)  # last key to first slot, first key to last slot (even only)

    def batch(self, step: int, micro: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, step, micro])
        n = self.num_pairs
        gaps = _distinct(rng, 0, (self.seq_len - 2 * n + 1) // 2, batch_size, n)  # slot g at 2n + 2g < seq_len
        block = np.zeros(batch_size, dtype=np.int64)
        return _mqar_rows(rng, self.vocab_size, self.seq_len, n, block, 2 * n + 2 * gaps, np.ones_like(gaps, bool))

    def describe(self) -> dict:
        return {"task": "mqar", "vocab_size": self.vocab_size, "seq_len": self.seq_len, "num_pairs": self.num_pairs,
                "seed": self.seed, "distances": list(self.distances), "scored_per_sequence": self.num_pairs,
                "query_slots": "uniform", "chance": self.chance}


def mqar_eval(vocab_size: int, window: int, distance: int, key_position: int, num_pairs: int, n: int,
              seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n sequences with one scored query, `distance` tokens after its key at `key_position`. The queried
    pair j is uniform over those that fit (block start key_position - 2j >= 0, block ends before the query);
    the other keys are queried, unscored, at random free slots after the block, as in training."""
    _check(num_pairs >= 1 and vocab_size // 2 - 1 >= num_pairs,
           f"num_pairs {num_pairs} needs 1 <= num_pairs <= vocab_size // 2 - 1 (vocab_size {vocab_size})")
    _check(distance >= 2 and distance % 2 == 0, f"distance must be even and >= 2 (queries sit on even offsets), got {distance}")
    _check(0 <= key_position and key_position + distance < window,
           f"key_position {key_position} + distance {distance} must lie in [0, window {window})")
    j_lo, j_hi = max(0, num_pairs - distance // 2), min(num_pairs - 1, key_position // 2)
    _check(j_lo <= j_hi, f"no pair fits: key_position {key_position} with distance {distance} leaves no room for "
                         f"a block of {num_pairs} pairs before the query")
    rng = np.random.default_rng([seed, _EVAL, 1, window, distance, key_position])
    j = rng.integers(j_lo, j_hi + 1, size=n)
    block = key_position - 2 * j
    slots = (window - 2 * num_pairs + 1) // 2  # slot g is position block + 2 num_pairs + 2g, if inside the window
    g = np.arange(slots)[None, :]
    mine = (distance - 2 * num_pairs + 2 * j) // 2  # the scored query's slot
    free = (block[:, None] + 2 * num_pairs + 2 * g < window) & (g != mine[:, None])
    order = np.where(free, rng.random((n, slots)), np.inf).argsort(axis=1)[:, : num_pairs - 1]
    others = np.where(np.take_along_axis(free, order, 1), block[:, None] + 2 * num_pairs + 2 * order, -1)
    query = np.full((n, num_pairs), -1, dtype=np.int64)
    scored = np.zeros((n, num_pairs), dtype=bool)
    rows = np.arange(n)
    rest = np.arange(num_pairs)[None, :] != j[:, None]
    query[rest] = others.reshape(-1)  # the other keys in pair order, each its own random slot (or none)
    query[rows, j], scored[rows, j] = key_position + distance, True
    return _mqar_rows(rng, vocab_size, window, num_pairs, block, query, scored)


# ---------------------------------------------------------------------------------------------- specs

def make_task(task: dict, seq_len: int, seed: int) -> CopyTask | MQARTask:
    """The task of a training spec: {"kind": "copy", "vocab_size", "segment"} or {"kind": "mqar",
    "vocab_size", "num_pairs"} (the config's recall.tasks entry, validated there)."""
    kind = task["kind"]
    if kind == "copy":
        return CopyTask(task["vocab_size"], seq_len, task["segment"], seed)
    if kind == "mqar":
        return MQARTask(task["vocab_size"], seq_len, task["num_pairs"], seed)
    raise ValueError(f"task kind must be copy or mqar, got {kind!r}")


def in_distribution(task: CopyTask | MQARTask, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n held-out sequences of the training distribution (a stream no training step reads)."""
    return task.batch(_EVAL, 2, n)  # training steps are < _EVAL


class CopyAugmented:
    """A language-model sampler whose windows repeat an earlier span of themselves: in round(fraction x B)
    windows of every batch (rows drawn at random), `segment` tokens at a random start are copied D tokens
    later, D uniform on [segment, T - segment] as in CopyTask, overwriting the text there. The loss stays
    on every token, so a model that learns to copy earns it on the repeat. Pure function of (the wrapped
    sampler's seed, step, micro)."""

    def __init__(self, sampler, fraction: float, segment: int):
        T = sampler.length + 1  # windows of length + 1 tokens (inputs and the shifted targets)
        _check(0 <= fraction <= 1, f"fraction must lie in [0, 1], got {fraction}")
        _check(segment >= 2 and 2 * segment <= T - 1, f"segment {segment} must be >= 2 and fit twice in {T - 1} tokens")
        self.sampler, self.fraction, self.segment = sampler, fraction, segment
        self.seed, self.length = sampler.seed, sampler.length

    def sample(self, step: int, micro: int, batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(windows, rows repeated, distance, first start), the last two per repeated row."""
        x = self.sampler.batch(step, micro, batch_size).copy()
        rng = np.random.default_rng([self.seed, step, micro, _EVAL + 1])  # a stream apart from the sampler's
        rows = np.sort(rng.choice(batch_size, size=int(round(self.fraction * batch_size)), replace=False))
        seg, T = self.segment, self.length  # the copy lies inside the first T + 1 tokens
        d = rng.integers(seg, T - seg + 1, size=len(rows))
        first = rng.integers(0, T - seg - d + 1)
        j = np.arange(seg)[None, :]
        x[rows[:, None], (first + d)[:, None] + j] = x[rows[:, None], first[:, None] + j]
        return x, rows, d, first

    def batch(self, step: int, micro: int, batch_size: int) -> np.ndarray:
        return self.sample(step, micro, batch_size)[0]


# ---------------------------------------------------------------------------------------------- grid

class Cell(NamedTuple):
    window: int
    distance: int
    first_start: int  # copy: start of the first copy; MQAR grid: position of the scored key
    kind: str  # "inside L" | "far position" | "far distance"


def eval_grid(seq_len: int, multiples: list[int], segment: int) -> list[Cell]:
    """Per multiple k (window W = k L): distances {segment, L/2, L - segment} at the start ("inside L") and
    ending at the window's end ("far position", k >= 2); distances k L / 2 and k L - segment at the start
    when beyond L ("far distance"; k L / 2 = L at k = 2 is neither, so it is left out)."""
    L = seq_len
    _check(2 * segment <= L, f"segment {segment} too long for seq_len {L} (need 2 * segment <= seq_len)")
    _check(all(k >= 1 for k in multiples), f"multiples must be positive integers, got {multiples}")
    inside = sorted({segment, L // 2, L - segment})
    cells = []
    for k in multiples:
        W = k * L
        cells += [Cell(W, d, 0, "inside L") for d in inside]
        if k >= 2:
            cells += [Cell(W, d, W - d - segment, "far position") for d in inside]
        cells += [Cell(W, d, 0, "far distance") for d in sorted({k * L // 2, k * L - segment}) if d > L]
    return cells


def mqar_grid(seq_len: int, multiples: list[int], num_pairs: int) -> list[Cell]:
    """eval_grid with the block (2 num_pairs tokens) as the span, distances rounded down to even, and
    first_start = the key position for mqar_eval: the block starts at >= L in "far position" cells."""
    n, cells = num_pairs, []
    for c in eval_grid(seq_len, multiples, 2 * n):
        d = c.distance - c.distance % 2
        key = c.window - d - 2 if c.kind == "far position" else 2 * (n - 1)  # far: query in the last slot
        cells.append(Cell(c.window, d, key, c.kind))
    return cells


# ---------------------------------------------------------------------------------------------- scoring

@torch.no_grad()
def accuracy_per_sequence(logits_fn: Callable[[torch.Tensor], torch.Tensor], inputs: np.ndarray,
                          targets: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(correct, total) per sequence, both (n,) int64: argmax next-token matches on the scored targets.
    logits_fn takes a CPU int64 tensor (B, T) and returns (B, T, V) logits (or a tuple led by them)."""
    _check(inputs.shape == targets.shape, f"inputs {inputs.shape} and targets {targets.shape} differ in shape")
    correct, total = [], []
    for i in range(0, len(inputs), batch_size):
        out = logits_fn(torch.from_numpy(np.ascontiguousarray(inputs[i : i + batch_size])))
        out = out[0] if isinstance(out, tuple) else out
        pred = torch.as_tensor(out).argmax(-1).cpu().numpy()  # argmax on the model's device: only ids travel
        y = targets[i : i + batch_size]
        mask = y != IGNORE
        correct.append(((pred == y) & mask).sum(1))
        total.append(mask.sum(1))
    return np.concatenate(correct).astype(np.int64), np.concatenate(total).astype(np.int64)


def accuracy(logits_fn: Callable[[torch.Tensor], torch.Tensor], inputs: np.ndarray, targets: np.ndarray,
             batch_size: int = 64) -> dict:
    """{correct, total, accuracy} over every scored target."""
    c, t = accuracy_per_sequence(logits_fn, inputs, targets, batch_size)
    correct, total = int(c.sum()), int(t.sum())
    return {"correct": correct, "total": total, "accuracy": correct / total if total else float("nan")}
