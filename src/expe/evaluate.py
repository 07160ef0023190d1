"""Length extrapolation (METHOD.md, Evaluation): mean next-token loss at ev = k times the
training length over non-overlapping windows, each window inside one held-out document,
plus the per-position mean loss along the window."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from .errors import DataError
from .shards import TokenShard
from .train import autocast, load_trained, pick_device


def windows(shard: TokenShard, length: int, max_tokens: int | None) -> list[tuple[int, int]]:
    """(doc, start) of every non-overlapping window of `length + 1` tokens inside one document.

    With `max_tokens`, an evenly spaced deterministic subset of max(1, max_tokens // length)
    windows is kept, so every length is scored on about the same number of tokens."""
    out = [
        (d, s)
        for d, n in enumerate(shard.lengths)
        for s in range(0, int(n) - length, length)  # inputs s..s+length-1, targets s+1..s+length
    ]
    if not out:
        longest = int(shard.lengths.max()) if shard.n_docs else 0
        raise DataError(
            f"no {shard.split} document holds a window of {length + 1} tokens (longest has {longest}); "
            "drop that ev multiple or use longer documents"
        )
    cap = max(1, max_tokens // length) if max_tokens else len(out)
    if len(out) > cap:
        keep = np.linspace(0, len(out) - 1, cap).round().astype(int)
        out = [out[i] for i in keep]
    return out


@torch.no_grad()
def evaluate_length(model, shard: TokenShard, length: int, max_tokens: int | None, batch_size: int,
                    device: torch.device, precision: str = "auto", progress: bool = False) -> dict[str, Any]:
    wins = windows(shard, length, max_tokens)
    pos_sum = torch.zeros(length, dtype=torch.float64)
    t0 = time.perf_counter()
    for i in tqdm(range(0, len(wins), batch_size), desc=f"eval len {length}", disable=not progress):
        chunk = wins[i : i + batch_size]
        batch = np.stack([shard.doc(d)[s : s + length + 1].astype(np.int64) for d, s in chunk])
        x = torch.from_numpy(batch).to(device)
        with autocast(device, precision):
            _, loss = model(x[:, :-1], x[:, 1:], reduction="none")
        pos_sum += loss.double().sum(0).cpu()
    per_pos = pos_sum / len(wins)
    seconds = time.perf_counter() - t0
    return {
        "length": length,
        "loss": float(per_pos.mean()),
        "ppl": math.exp(float(per_pos.mean())),
        "windows": len(wins),
        "docs": len({d for d, _ in wins}),
        "tokens": len(wins) * length,
        "tokens_per_second": len(wins) * length / seconds,
        "per_position": [round(float(v), 5) for v in per_pos],
    }


def evaluate(model_dir: str | Path, data_dir: str | Path, multiples: list[int], split: str = "test",
             pe_overrides: dict[str, Any] | None = None, max_tokens: int | None = None,
             batch_size: int = 8, device: str = "auto", threads: int = 1, progress: bool = True) -> dict[str, Any]:
    """Evaluate a trained model at every ev multiple; `pe_overrides` sets inference-time options
    such as ExPE's `scale` or RoPE's `interpolation` without touching the weights."""
    torch.set_num_threads(max(1, threads))
    dev = pick_device(device)
    model = load_trained(model_dir, device=str(dev))
    if pe_overrides:
        model.pe.set_inference(**pe_overrides)
    shard = TokenShard(data_dir, split)
    if shard.vocab_size != model.cfg.vocab_size:
        raise DataError(
            f"tokenizer/model vocabulary mismatch: shards in {data_dir} have {shard.vocab_size} ids, "
            f"model {model_dir} has {model.cfg.vocab_size}"
        )
    L = model.cfg.seq_len
    results = []
    for k in multiples:
        if not isinstance(k, int) or k <= 0:
            raise DataError(f"eval.multiples: must be positive integers, got {k!r}")
        r = evaluate_length(model, shard, k * L, max_tokens, batch_size, dev, progress=progress)
        results.append({"ev": k, **r})
    return {
        "model_dir": str(model_dir),
        "train_length": L,
        "split": split,
        "pe": {**model.cfg.pe, **(pe_overrides or {})},
        "results": results,
    }
