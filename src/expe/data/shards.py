"""Token shards: one flat memmap of token ids per split plus a document index.

    <split>.bin        token ids, uint16 when the vocabulary fits, else uint32
    <split>.idx.npy    int64 offsets, n_docs + 1 entries: document i is bin[idx[i]:idx[i+1]]
    <split>.json       dtype, counts, vocab size and the sha256 of both files (verified on load)
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from expe.errors import DataError
from expe.io import atomic_path, guard_write, read_json, sha256_file, write_json


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    if vocab_size <= 0:
        raise DataError(f"vocabulary size must be positive, got {vocab_size}")
    if vocab_size <= 2**16:
        return np.dtype(np.uint16)
    if vocab_size <= 2**32:
        return np.dtype(np.uint32)
    raise DataError(f"vocabulary of {vocab_size} ids does not fit the largest shard dtype (uint32)")


class ShardWriter:
    """Streams documents to `<split>.bin` under a temporary name; `close()` publishes it atomically."""

    def __init__(self, directory: str | Path, split: str, vocab_size: int, kept: str = ""):
        self.dir, self.split, self.vocab_size, self.kept = Path(directory), split, vocab_size, kept
        self.dtype = dtype_for_vocab(vocab_size)
        self._bin_ctx = atomic_path(self.dir / f"{split}.bin", what=f"token shard {split}.bin", kept=kept)
        self._bin_path = self._bin_ctx.__enter__()
        self._f = open(self._bin_path, "wb")
        self.offsets = [0]

    def add(self, ids: Iterable[int] | np.ndarray) -> None:
        arr = np.asarray(ids, dtype=np.int64)
        if arr.size and (arr.min() < 0 or arr.max() >= self.vocab_size):
            raise DataError(
                f"token id {int(arr.max())} outside the vocabulary (size {self.vocab_size}) in split {self.split}"
            )
        with guard_write(self.dir / f"{self.split}.bin", f"token shard {self.split}.bin", self.kept):
            self._f.write(arr.astype(self.dtype).tobytes())
        self.offsets.append(self.offsets[-1] + arr.size)

    def close(self, extra: dict | None = None) -> dict:
        try:
            with guard_write(self.dir / f"{self.split}.bin", f"token shard {self.split}.bin", self.kept):
                self._f.close()  # a full disk often shows here, at the last flush
            bin_sha = sha256_file(self._bin_path)
        except BaseException:
            self.abort()
            raise
        self._bin_ctx.__exit__(None, None, None)  # publishes <split>.bin (or removes its temporary file)
        with atomic_path(self.dir / f"{self.split}.idx.npy", what=f"token index {self.split}.idx.npy", kept=self.kept) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, np.asarray(self.offsets, dtype=np.int64))
        lengths = np.diff(self.offsets)
        meta = {
            "split": self.split,
            "dtype": self.dtype.name,
            "vocab_size": self.vocab_size,
            "n_docs": len(lengths),
            "n_tokens": int(self.offsets[-1]),
            "max_doc_tokens": int(lengths.max()) if len(lengths) else 0,
            "sha256": {"bin": bin_sha, "idx": sha256_file(self.dir / f"{self.split}.idx.npy")},
            **(extra or {}),
        }
        write_json(self.dir / f"{self.split}.json", meta, what=f"shard metadata {self.split}.json", kept=self.kept)
        return meta

    def abort(self) -> None:
        try:
            self._f.close()
        except OSError:
            pass  # the disk that failed the write may fail the flush too; the temporary file goes anyway
        self._bin_ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)


class TokenShard:
    """Read-only view of one split; checksums are verified on open so a truncated file is named."""

    def __init__(self, directory: str | Path, split: str, verify: bool = True):
        self.dir, self.split = Path(directory), split
        meta_path = self.dir / f"{split}.json"
        if not meta_path.exists():
            raise DataError(f"token shard {meta_path} not found (run the shards step first)")
        self.meta = read_json(meta_path)
        bin_path, idx_path = self.dir / f"{split}.bin", self.dir / f"{split}.idx.npy"
        for path, key in ((bin_path, "bin"), (idx_path, "idx")):
            if not path.exists():
                raise DataError(f"token shard {path} is missing")
            if verify and sha256_file(path) != self.meta["sha256"][key]:
                raise DataError(f"token shard {path} is corrupt or truncated (checksum mismatch)")
        self.offsets = np.load(idx_path)
        dtype = np.dtype(self.meta["dtype"])
        expected = int(self.offsets[-1]) * dtype.itemsize
        if bin_path.stat().st_size != expected:
            raise DataError(f"token shard {bin_path} has {bin_path.stat().st_size} bytes, expected {expected}")
        self.tokens = np.memmap(bin_path, dtype=dtype, mode="r") if expected else np.zeros(0, dtype)
        self.vocab_size = int(self.meta["vocab_size"])

    @property
    def n_docs(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def doc(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]


class WindowSampler:
    """Training windows of `length + 1` tokens, each inside one document, uniform over start positions.

    Batch b of step s is a pure function of (seed, s, b), so a resumed run reads exactly the
    windows the uninterrupted run would have read: the data position is the step counter.
    """

    def __init__(self, shard: TokenShard, length: int, seed: int):
        self.shard, self.length, self.seed = shard, length, seed
        starts_per_doc = np.maximum(shard.lengths - length, 0)  # a doc of n tokens has n - length starts
        if starts_per_doc.sum() == 0:
            longest = int(shard.lengths.max()) if shard.n_docs else 0
            raise DataError(
                f"no training document holds a window of {length + 1} tokens "
                f"(longest has {longest}); lower train.seq_len or use longer documents"
            )
        self.cum = np.concatenate([[0], np.cumsum(starts_per_doc)])

    def batch(self, step: int, micro: int, batch_size: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, step, micro])
        u = rng.integers(0, self.cum[-1], size=batch_size)
        doc = np.searchsorted(self.cum, u, side="right") - 1
        starts = self.shard.offsets[doc] + (u - self.cum[doc])
        idx = starts[:, None] + np.arange(self.length + 1)[None, :]
        return np.asarray(self.shard.tokens[idx], dtype=np.int64)
