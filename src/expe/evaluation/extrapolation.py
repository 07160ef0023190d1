"""Length extrapolation (METHOD.md, Evaluation).

Two views of the loss at ev = k x the training length L, both restricted to held-out documents:

- non-overlapping windows (the paper's "Loss (ev=k)"): every window of k*L tokens inside one
  document (an evenly spaced subset when `max_tokens` caps it), with the mean over positions < L
  (context the model saw in training) and >= L (more context than training ever showed) apart,
  and the per-position mean along the window;
- sliding windows (YaRN's and ALiBi's protocol): windows of k*L tokens moved by `stride`, scoring
  only the last `stride` tokens of each, so every scored token has between k*L - stride and
  k*L - 1 tokens of context. The scored tokens are the *same* at every k (those at document
  positions >= max_k(k*L) - stride), so differences between k are differences of context alone.

Every result keeps per-document sums, which the paired bootstrap over documents (stats.py) needs.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from expe.errors import ConfigError, DataError
from expe.runtime import autocast, load_trained, resolve_device, resolve_precision, set_threads
from expe.data.shards import TokenShard


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
    return _cap(out, max(1, max_tokens // length) if max_tokens else None)


def _cap(items: list, cap: int | None) -> list:
    if cap is None or len(items) <= cap:
        return items
    keep = np.linspace(0, len(items) - 1, cap).round().astype(int)
    return [items[i] for i in keep]


def sliding_windows(shard: TokenShard, length: int, stride: int, longest: int,
                    max_tokens: int | None) -> list[tuple[int, int]]:
    """(doc, u): blocks of `stride` scored targets starting at document position u, for a window of
    `length` inputs whose last `stride` predictions are scored. u starts at longest - stride + 1 for
    every length (the same targets at every k) and steps by `stride`."""
    first = longest - stride + 1
    out = [(d, u) for d, n in enumerate(shard.lengths) for u in range(first, int(n) - stride + 1, stride)]
    if not out:
        raise DataError(f"sliding evaluation: no {shard.split} document holds {longest + 1} tokens "
                        f"(longest has {int(shard.lengths.max()) if shard.n_docs else 0}); lower eval.sliding.multiples")
    return _cap(out, max(1, max_tokens // stride) if max_tokens else None)


class _DocSums:
    """Per-document sums of loss and token counts (total, positions < L, positions >= L)."""

    def __init__(self, n_docs: int):
        self.loss = np.zeros(n_docs)
        self.tokens = np.zeros(n_docs, dtype=np.int64)
        self.beyond_loss = np.zeros(n_docs)
        self.beyond_tokens = np.zeros(n_docs, dtype=np.int64)
        self.windows = np.zeros(n_docs, dtype=np.int64)

    def add(self, docs: np.ndarray, loss: np.ndarray, split_at: int | None = None) -> None:
        np.add.at(self.loss, docs, loss.sum(1))
        np.add.at(self.tokens, docs, loss.shape[1])
        np.add.at(self.windows, docs, 1)
        if split_at is not None and split_at < loss.shape[1]:
            np.add.at(self.beyond_loss, docs, loss[:, split_at:].sum(1))
            np.add.at(self.beyond_tokens, docs, loss.shape[1] - split_at)

    def rows(self, doc_ids: list[str] | None) -> list[dict[str, Any]]:
        out = []
        for d in np.flatnonzero(self.tokens):
            row = {"doc": int(d), "windows": int(self.windows[d]), "tokens": int(self.tokens[d]),
                   "loss_sum": round(float(self.loss[d]), 4)}
            if self.beyond_tokens.any():
                row.update(beyond_tokens=int(self.beyond_tokens[d]), beyond_loss_sum=round(float(self.beyond_loss[d]), 4))
            if doc_ids:
                row["id"] = doc_ids[d]
            out.append(row)
        return out


def _forward_losses(model, shard: TokenShard, starts: list[tuple[int, int]], length: int, batch_size: int,
                    device: torch.device, precision: str, desc: str, progress: bool):
    """Yield (doc indices, per-position losses as float64 numpy (B, length)) for windows
    inputs = doc[s : s + length], targets = doc[s + 1 : s + length + 1]."""
    for i in tqdm(range(0, len(starts), batch_size), desc=desc, disable=not progress, mininterval=5):
        chunk = starts[i : i + batch_size]
        batch = np.stack([shard.doc(d)[s : s + length + 1].astype(np.int64) for d, s in chunk])
        x = torch.from_numpy(batch).to(device)
        with autocast(device, precision):
            _, loss = model(x[:, :-1], x[:, 1:], reduction="none")
        yield np.array([d for d, _ in chunk]), loss.double().cpu().numpy()


@torch.no_grad()
def evaluate_length(model, shard: TokenShard, length: int, max_tokens: int | None, batch_size: int,
                    device: torch.device, precision: str = "fp32", progress: bool = False,
                    train_length: int | None = None) -> dict[str, Any]:
    wins = windows(shard, length, max_tokens)
    L = train_length or length
    pos_sum = np.zeros(length)
    sums = _DocSums(shard.n_docs)
    t0 = time.perf_counter()
    for docs, loss in _forward_losses(model, shard, wins, length, batch_size, device, precision,
                                      f"eval len {length}", progress):
        pos_sum += loss.sum(0)
        sums.add(docs, loss, split_at=L)
    per_pos = pos_sum / len(wins)
    seconds = time.perf_counter() - t0
    mean = float(per_pos.mean())
    within = float(per_pos[:L].mean())
    beyond = float(per_pos[L:].mean()) if length > L else None
    return {
        "length": length,
        "loss": mean,
        "ppl": math.exp(mean),
        "loss_within_L": within,  # positions 0 .. L-1 of each window: at most L tokens of context
        "loss_beyond_L": beyond,  # positions >= L: more context than any training window had
        "windows": len(wins),
        "docs": len({d for d, _ in wins}),
        "tokens": len(wins) * length,
        "tokens_beyond_L": len(wins) * max(0, length - L),
        "windows_available": len(windows(shard, length, None)),
        "seconds": round(seconds, 3),
        "tokens_per_second": len(wins) * length / max(seconds, 1e-9),
        "per_position": [round(float(v), 5) for v in per_pos],
        "per_doc": sums.rows(shard.meta.get("doc_ids")),
    }


@torch.no_grad()
def evaluate_sliding(model, shard: TokenShard, length: int, stride: int, longest: int, max_tokens: int | None,
                     batch_size: int, device: torch.device, precision: str = "fp32",
                     progress: bool = False) -> dict[str, Any]:
    blocks = sliding_windows(shard, length, stride, longest, max_tokens)
    starts = [(d, u - length + stride - 1) for d, u in blocks]  # window inputs start so targets end at u+stride-1
    sums = _DocSums(shard.n_docs)
    total, t0 = 0.0, time.perf_counter()
    for docs, loss in _forward_losses(model, shard, starts, length, batch_size, device, precision,
                                      f"sliding len {length}", progress):
        scored = loss[:, -stride:]
        total += scored.sum()
        sums.add(docs, scored)
    n = len(blocks) * stride
    return {
        "length": length,
        "stride": stride,
        "loss": total / n,
        "context_min": length - stride,
        "context_max": length - 1,
        "first_scored_position": longest - stride + 1,
        "windows": len(blocks),
        "docs": len({d for d, _ in blocks}),
        "tokens": n,
        "seconds": round(time.perf_counter() - t0, 3),
        "per_doc": sums.rows(shard.meta.get("doc_ids")),
    }


def check_multiples(multiples: list, key: str = "eval.multiples") -> list[int]:
    for k in multiples:
        if not isinstance(k, int) or isinstance(k, bool) or k <= 0:
            raise ConfigError(f"{key}: must be positive integers, got {k!r}")
    return list(multiples)


def load_for_eval(model_dir, data_dir, split: str, device: str, pe_overrides: dict | None, threads: int):
    set_threads(threads)
    dev = resolve_device(device)
    model = load_trained(model_dir, device=dev)
    if pe_overrides:  # the door for inference-time options (the CLI's strings, a job's settings, Python)
        from expe.nn.registry import parse_overrides

        model.pe.set_inference(**parse_overrides(model.cfg.pe["name"], pe_overrides))
    shard = TokenShard(data_dir, split)
    if shard.vocab_size != model.cfg.vocab_size:
        raise DataError(
            f"tokenizer/model vocabulary mismatch: shards in {data_dir} have {shard.vocab_size} ids, "
            f"model {model_dir} has {model.cfg.vocab_size}"
        )
    return model, shard, dev


def evaluate(model_dir: str | Path, data_dir: str | Path, multiples: list[int], split: str = "test",
             pe_overrides: dict[str, Any] | None = None, max_tokens: int | None = None,
             batch_size: int = 8, device: str = "auto", threads: int = 1, progress: bool = True,
             precision: str = "fp32", sliding: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate a trained model at every ev multiple; `pe_overrides` sets inference-time options
    such as ExPE's `scale` or RoPE's `interpolation` without touching the weights.

    sliding: {"multiples": [...], "stride": tokens or None (L/2), "max_tokens": scored tokens per length}."""
    check_multiples(multiples)
    if batch_size < 1:
        raise ConfigError(f"eval.batch_size: must be >= 1, got {batch_size}")
    if max_tokens is not None and max_tokens < 1:
        raise ConfigError(f"eval.max_tokens: must be >= 1 (or null for every window), got {max_tokens}")
    model, shard, dev = load_for_eval(model_dir, data_dir, split, device, pe_overrides, threads)
    precision = resolve_precision(dev, precision)
    L = model.cfg.seq_len
    results = [{"ev": k, **evaluate_length(model, shard, k * L, max_tokens, batch_size, dev, precision, progress, L)}
               for k in multiples]
    out = {
        "model_dir": str(model_dir),
        "train_length": L,
        "split": split,
        "precision": precision,
        "device": str(dev),
        "max_tokens": max_tokens,
        "pe": {**model.cfg.pe, **(pe_overrides or {})},
        "results": results,
    }
    if sliding and sliding.get("multiples"):
        ks = check_multiples(sliding["multiples"], "eval.sliding.multiples")
        stride = int(sliding.get("stride") or max(1, L // 2))
        if not 0 < stride <= min(ks) * L:
            raise ConfigError(f"eval.sliding.stride: must be in 1 .. {min(ks) * L} (the shortest sliding window), got {stride}")
        longest = max(ks) * L
        out["sliding"] = [{"ev": k, **evaluate_sliding(model, shard, k * L, stride, longest, sliding.get("max_tokens"),
                                                       batch_size, dev, precision, progress)} for k in ks]
    return out
