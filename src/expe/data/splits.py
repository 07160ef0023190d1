"""Which documents are held out: every kept document gets u = sha256("<seed>:<id>") in [0, 1); the
held-out documents are those long enough for evaluation (>= test_min_tokens) with the smallest u,
test first, then dev (a size < 1 is a fraction of the documents kept). Deterministic, independent of
stream order and of the number of workers."""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from typing import Any

from expe.errors import DataError

SPLITS = ("train", "dev", "test")


def doc_hash(seed: int, doc_id: str) -> float:
    """u in [0, 1): the document's place in the held-out order (smallest u first)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{doc_id}".encode()).digest()[:8], "big") / 2**64



def predicted_heldout(entries: list[tuple[float, int, str]], config: dict[str, Any]) -> set[str]:
    data = config["data"]
    test_min = data["test_min_tokens"] if data["test_min_tokens"] is not None else data["min_tokens"]
    eligible = sorted((u, i) for u, n, i in entries if n >= test_min)
    n_dev, n_test = _sizes(len(entries), data["dev_size"], data["test_size"])
    return {i for _, i in eligible[: n_dev + n_test]}


def _sizes(n_docs: int, dev_size: float, test_size: float) -> tuple[int, int]:
    def count(size: float) -> int:
        return int(size) if size >= 1 else max(1, round(size * n_docs))

    return count(dev_size), count(test_size)


def split_counts(n_docs: int, n_eligible: int, dev_size: float, test_size: float) -> tuple[int, int]:
    dev, test = _sizes(n_docs, dev_size, test_size)
    if dev + test > n_eligible:
        raise DataError(
            f"data.dev_size/test_size ask for {dev} + {test} held-out documents but only {n_eligible} "
            "documents are long enough (data.test_min_tokens); lower the sizes or collect more"
        )
    if n_docs - dev - test < 1:
        raise DataError(f"data.dev_size/test_size leave no training document ({n_docs} documents collected)")
    return dev, test


def length_histogram(lengths) -> dict[str, int]:
    """Document counts per power-of-two length bin, e.g. '1024-2047'."""
    hist: Counter = Counter()
    for n in lengths:
        b = 0 if n <= 0 else int(math.log2(n))
        hist[b] += 1
    return {f"{2**b}-{2**(b + 1) - 1}": hist[b] for b in sorted(hist)}
