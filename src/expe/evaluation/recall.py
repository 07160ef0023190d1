"""The recall study's evaluation: a task model's accuracy on held-out sequences of its training
distribution (the positive control) and on every cell of the extrapolation grid (expe.data.synthetic:
"inside L", "far position", "far distance"), at windows of k x L.

Each model seed draws its own sequences (the eval streams are keyed by the model's seed), so trials
are independent across seeds. A causal model's prediction at position p depends on tokens <= p only,
so every sequence is cut after its last scored position: the same numbers as the full window, for a
fraction of the compute when the repeat sits early in a long window.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from expe.data import synthetic as S
from expe.runtime import load_trained, read_model_config, resolve_device, set_threads


def _score(model, x: np.ndarray, y: np.ndarray, batch_size: int) -> dict[str, Any]:
    last = int(np.flatnonzero((y != S.IGNORE).any(0)).max())
    x, y = x[:, : last + 1], y[:, : last + 1]  # causal: what follows the last scored position changes nothing
    dev = next(model.parameters()).device
    c, t = S.accuracy_per_sequence(lambda b: model(b.to(dev)), x, y, batch_size)
    return {"correct": int(c.sum()), "total": int(t.sum()), "sequences": len(c), "accuracy": float(c.sum() / t.sum()),
            "exact": int((c == t).sum())}  # exact: every scored token of the sequence right (the whole span copied)


def grid(task: S.CopyTask | S.MQARTask, multiples: list[int]) -> list[S.Cell]:
    if isinstance(task, S.CopyTask):
        return S.eval_grid(task.seq_len, multiples, task.segment)
    return S.mqar_grid(task.seq_len, multiples, task.num_pairs)


def cell_data(task: S.CopyTask | S.MQARTask, cell: S.Cell, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(task, S.CopyTask):
        return S.copy_eval(task.vocab_size, cell.window, cell.distance, cell.first_start, task.segment, n, seed)
    return S.mqar_eval(task.vocab_size, cell.window, cell.distance, cell.first_start, task.num_pairs, n, seed)


@torch.no_grad()
def evaluate_recall(model_dir: str | Path, multiples: list[int], trials: int, in_distribution_trials: int,
                    batch_size: int, device: str = "auto", threads: int = 1) -> dict[str, Any]:
    set_threads(threads)
    t0 = time.time()
    cfg = read_model_config(model_dir)
    model = load_trained(model_dir, resolve_device(device))
    L, seed = cfg["train"]["seq_len"], cfg["seed"]
    task = S.make_task(cfg["task"], L, seed)
    x, y = S.in_distribution(task, in_distribution_trials)
    out: dict[str, Any] = {"task": task.describe(), "train_length": L, "seed": seed, "chance": task.chance,
                           "steps": cfg["train"]["steps"], "in_distribution": _score(model, x, y, batch_size)}
    cells = []
    for c in grid(task, multiples):
        x, y = cell_data(task, c, trials, seed)
        cells.append({**c._asdict(), "ev": c.window // L, **_score(model, x, y, batch_size)})
    out["cells"] = cells
    out["seconds"] = round(time.time() - t0, 2)
    return out
