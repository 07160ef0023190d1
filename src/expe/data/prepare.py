"""Data preparation in one pass (paper section 3): stream documents from a source, tokenise each
once, keep those of at least `min_tokens` tokens until `token_budget` tokens, and write token
shards directly; the text is never written to disk.

    source --(workers over the source's shards)--> tokenise --> length filter --> chunk parts
           --> merge: split by document hash --> <split>.bin / .idx.npy / .json + manifest.json

- Split: every kept document gets u = sha256("<seed>:<id>") in [0, 1). The held-out documents are
  the documents long enough for evaluation (>= test_min_tokens) with the smallest u: the first
  `test_size` of them are test, the next `dev_size` dev (a size < 1 is a fraction of the documents
  kept). Deterministic, independent of stream order and of the number of workers.
- Random subset (`shuffle: true`): a seeded shuffle of the source's shard order (Hugging Face
  streaming: `IterableDataset.shuffle(seed, buffer_size)`, which also interleaves shards; local
  sources: of the file/document order); `shuffle_buffer` > 1 adds an in-stream buffer.
- Parallel: `workers` processes, each owning every workers-th shard of the source (the dataset's
  own shards for streaming sources, every workers-th document for local ones) with its share of
  the token budget, so the output does not depend on timing.
- Resumable: each worker writes its kept documents in chunks of `chunk_docs` documents (token
  parts + a state file, each written atomically); a killed run continues after its last complete
  chunk and ends with shards identical to an uninterrupted run.

Memory stays bounded: one chunk per worker, plus ids and lengths of kept documents for the merge.
"""

from __future__ import annotations

import hashlib
import logging
import math
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from tqdm import tqdm

from expe.data.shards import ShardWriter, dtype_for_vocab
from expe.data.sources import SourceStats, Stream
from expe.data.splits import SPLITS, doc_hash, length_histogram, split_counts
from expe.data.tokenizer import Tokenizer
from expe.errors import DataError
from expe.io import atomic_path, ensure_dir, read_json, write_json

log = logging.getLogger("expe.data")


def _worker_budget(budget: int | None, workers: int) -> int | None:
    return None if not budget else math.ceil(budget / workers)


@dataclass
class WorkerJob:
    """One worker's share of the source: its documents go to chunk parts under <work>/w<worker>/,
    each part (tokens + ids/lengths/u) and then the worker's state written atomically, so a killed
    run resumes after its last complete chunk."""

    config: dict[str, Any]
    tokenizer_path: str
    work: str
    worker: int
    load_dataset: Callable | None = None
    stop_after_chunks: int | None = None  # tests: as if killed after this many chunks
    progress: bool = False

    @property
    def dir(self) -> Path:
        return Path(self.work) / f"w{self.worker:03d}"

    def initial_state(self) -> dict[str, Any]:
        path = self.dir / "state.json"
        return read_json(path) if path.exists() else {
            "chunks": 0, "consumed": 0, "kept_docs": 0, "kept_tokens": 0, "too_short": 0, "empty": 0, "done": False,
            "seen": 0, "skipped": {}, "skipped_files": [], "hf_state": None}

    def run(self) -> dict[str, Any]:
        data = self.config["data"]
        ensure_dir(self.dir)
        state = self.initial_state()
        if state["done"]:
            return state
        self.tok = Tokenizer(self.tokenizer_path)
        self.dtype = dtype_for_vocab(self.tok.vocab_size)
        self.budget = _worker_budget(data["token_budget"], data["workers"])
        self.cap_docs = _worker_budget(data["max_docs"], data["workers"])
        stats = SourceStats()
        stream = Stream(self.config, self.worker, data["workers"], self.load_dataset)
        docs = stream.docs(stats, state if state["consumed"] else None)
        bar = tqdm(desc=f"prepare w{self.worker}", unit="tok", unit_scale=True, disable=not self.progress,
                   mininterval=5, initial=state["kept_tokens"], total=self.budget)
        try:
            while True:
                chunk, examined, stop, exhausted = self._chunk(docs, state, bar)
                if examined == 0:
                    _account(state, stats, 0)
                    state["done"] = True
                    break
                self._write_chunk(state["chunks"], chunk)
                state["chunks"] += 1
                state["consumed"] += examined
                _account(state, stats, examined)
                if stop or exhausted:
                    state["done"] = True
                    state["budget_reached"] = bool(self.budget and state["kept_tokens"] >= self.budget)
                elif stream.hub and stream.hub.exact_state:
                    state["hf_state"] = stream.state()
                self._write_state(state)  # the chunk counts only once its state is written
                if state["done"]:
                    break
                if self.stop_after_chunks is not None and state["chunks"] >= self.stop_after_chunks:
                    return state
            state.setdefault("budget_reached", bool(self.budget and state["kept_tokens"] >= self.budget))
            self._write_state(state)
            return state
        finally:
            bar.close()

    def _chunk(self, docs: Iterator, state: dict, bar) -> tuple[dict[str, list], int, bool, bool]:
        """The next `chunk_docs` documents of the stream, encoded 16 at a time (only the token arrays
        of kept documents are held, never a chunk's text)."""
        data = self.config["data"]
        chunk: dict[str, list] = {"ids": [], "lengths": [], "u": [], "arrays": []}
        examined, stop, exhausted = 0, False, False
        while examined < data["chunk_docs"] and not stop:
            batch = []
            for doc in docs:
                batch.append(doc)
                if len(batch) == min(16, data["chunk_docs"] - examined):
                    break
            if not batch:
                exhausted = True
                break
            for doc, ids in zip(batch, self.tok.encode_batch([d.text for d in batch])):
                examined += 1
                if doc.id is None:  # a streamed row without text
                    state["skipped"]["no_text"] = state["skipped"].get("no_text", 0) + 1
                    continue
                if not doc.text.strip():
                    state["empty"] += 1
                    continue
                if len(ids) < data["min_tokens"]:
                    state["too_short"] += 1
                    continue
                chunk["arrays"].append(np.asarray(ids, dtype=self.dtype))
                chunk["ids"].append(doc.id)
                chunk["lengths"].append(len(ids))
                chunk["u"].append(doc_hash(self.config["seed"], doc.id))
                state["kept_tokens"] += len(ids)
                state["kept_docs"] += 1
                bar.update(len(ids))
                if (self.budget and state["kept_tokens"] >= self.budget) or \
                        (self.cap_docs and state["kept_docs"] >= self.cap_docs):
                    stop = True
                    break
        return chunk, examined, stop, exhausted

    def _write_chunk(self, c: int, chunk: dict[str, list]) -> None:
        kept = "the worker's earlier chunks are kept; free space and rerun to resume"
        with atomic_path(self.dir / f"part{c:06d}.bin", what=f"token part {c}", kept=kept) as tmp:
            with open(tmp, "wb") as f:
                for a in chunk["arrays"]:
                    f.write(a.astype(self.dtype).tobytes())
        write_json(self.dir / f"part{c:06d}.json", {k: chunk[k] for k in ("ids", "lengths", "u")} | {"dtype": self.dtype.name},
                   what=f"index of token part {c}", kept=kept)

    def _write_state(self, state: dict) -> None:
        write_json(self.dir / "state.json", state, what="preparation state",
                   kept="the worker's earlier chunks are kept; free space and rerun to resume")


def _run_worker(job: WorkerJob) -> dict[str, Any]:
    return job.run()


def _account(state: dict, stats: SourceStats, examined: int) -> None:
    """Add a chunk's counts: examined documents plus those the source skipped before yielding them
    (non-UTF-8 files, bad JSON lines)."""
    state["seen"] = state.get("seen", 0) + examined + sum(stats.skipped.values())
    stats.seen = 0
    for k, v in stats.skipped.items():
        state["skipped"][k] = state["skipped"].get(k, 0) + v
    stats.skipped.clear()
    state["skipped_files"] = (state["skipped_files"] + stats.skipped_files)[:100]
    stats.skipped_files = []


def prepare(config: dict[str, Any], tokenizer_path: str | Path, out_dir: str | Path, work_dir: str | Path | None = None,
            load_dataset: Callable | None = None, progress: bool = True,
            stop_after_chunks: int | None = None) -> dict[str, Any]:
    """Stream, tokenise once, filter, split and write `<out>/{train,dev,test}.*` + `manifest.json`.

    work_dir keeps the chunk parts and worker states between a killed run and its rerun (default
    `<out>/../prepare_work`); it is removed once the shards are complete."""
    data = config["data"]
    out = ensure_dir(out_dir)
    work = ensure_dir(work_dir or Path(out).parent / "prepare_work")
    t0 = time.time()
    tok = Tokenizer(tokenizer_path)
    key = {"data": data, "seed": config["seed"], "tokenizer_sha": hashlib.sha256(Path(tokenizer_path).read_bytes()).hexdigest()}
    key_path = work / "key.json"
    if key_path.exists() and read_json(key_path) != key:
        shutil.rmtree(work)  # parts of another data config or tokenizer: start over
        work = ensure_dir(work)
    write_json(key_path, key, what="preparation key")
    workers = data["workers"]
    jobs = [WorkerJob(config, str(tokenizer_path), str(work), w, load_dataset, stop_after_chunks, progress and workers == 1)
            for w in range(workers)]
    if workers == 1 or load_dataset is not None:
        states = [_run_worker(j) for j in jobs]  # an injected loader (tests) may not pickle
    else:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers) as pool:
            states = pool.map(_run_worker, jobs)
    if not all(s["done"] for s in states):
        return {"stopped": True, "states": states}
    return _merge(config, tok, work, states, out, t0, tokenizer_path)


def _parts(work: Path, states: list[dict]) -> Iterator[tuple[Path, dict]]:
    """Chunk parts in a fixed order: chunk 0 of every worker, then chunk 1, ..."""
    for c in range(max(s["chunks"] for s in states)):
        for w, s in enumerate(states):
            if c < s["chunks"]:
                base = work / f"w{w:03d}" / f"part{c:06d}"
                yield base.with_suffix(".bin"), read_json(base.with_suffix(".json"))


def _merge(config, tok: Tokenizer, work: Path, states: list[dict], out: Path, t0: float, tokenizer_path) -> dict:
    data = config["data"]
    test_min = data["test_min_tokens"] if data["test_min_tokens"] is not None else data["min_tokens"]
    ids, lengths, us = [], [], []
    for _, meta in _parts(work, states):
        ids += meta["ids"]
        lengths += meta["lengths"]
        us += meta["u"]
    seen = sum(s["seen"] for s in states)
    skipped = Counter()
    for s in states:
        skipped.update(s["skipped"])
    if seen == 0:
        raise DataError(f"data.source {data['source']}: the corpus is empty (no documents)")
    if not ids and sum(skipped.values()) >= seen:
        raise DataError(f"data.source {data['source']}: no usable document; all {seen} were skipped "
                        f"({', '.join(f'{v} {k}' for k, v in skipped.items())})")
    if not ids:
        raise DataError(f"data.min_tokens={data['min_tokens']}: every one of the {seen} documents is shorter "
                        f"(lengths measured by the tokenizer {tokenizer_path}); lower data.min_tokens")
    kept_tokens = int(sum(lengths))
    budget = data["token_budget"]
    reached = bool(budget and kept_tokens >= budget)
    if budget and not reached:
        msg = f"data.token_budget={budget} not reached: the source ended after {kept_tokens} tokens in {len(ids)} documents"
        if data["on_short_budget"] == "error":
            raise DataError(msg + " (set data.on_short_budget: warn to continue)")
        log.warning("%s; continuing (data.on_short_budget: warn)", msg)
    lengths_a, us_a = np.asarray(lengths), np.asarray(us)
    eligible = np.flatnonzero(lengths_a >= test_min)
    n_dev, n_test = split_counts(len(ids), len(eligible), data["dev_size"], data["test_size"])
    order = eligible[np.argsort(us_a[eligible], kind="stable")]
    assign = np.zeros(len(ids), dtype=np.int8)  # 0 train, 1 dev, 2 test
    assign[order[:n_test]] = 2
    assign[order[n_test : n_test + n_dev]] = 1

    kept = f"the tokenised chunk parts in {work} are kept; free space and rerun to finish"
    # the shards below replace earlier ones file by file: a folder without its manifest is incomplete
    (out / "manifest.json").unlink(missing_ok=True)
    writers = {s: ShardWriter(out, s, tok.vocab_size, kept) for s in SPLITS}
    split_ids: dict[str, list[str]] = {s: [] for s in SPLITS}
    held: list[tuple[float, str, int, np.ndarray]] = []  # dev/test, written in u order: independent of workers
    try:
        i = 0
        for bin_path, meta in _parts(work, states):
            arr = np.fromfile(bin_path, dtype=np.dtype(meta["dtype"]))
            offsets = np.concatenate([[0], np.cumsum(meta["lengths"])])
            if offsets[-1] != arr.size:
                raise DataError(f"{bin_path} holds {arr.size} tokens, its index {offsets[-1]}: delete {work} and rerun")
            for k, doc_id in enumerate(meta["ids"]):
                tokens = arr[offsets[k] : offsets[k + 1]]
                if assign[i] == 0:
                    writers["train"].add(tokens)
                    split_ids["train"].append(doc_id)
                else:
                    held.append((meta["u"][k], doc_id, int(assign[i]), tokens.copy()))
                i += 1
        for _, doc_id, a, tokens in sorted(held, key=lambda h: (h[0], h[1])):
            writers[SPLITS[a]].add(tokens)
            split_ids[SPLITS[a]].append(doc_id)
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    metas = {}
    for k, s in enumerate(SPLITS):
        try:
            metas[s] = writers[s].close({"doc_ids": split_ids[s], "min_tokens": data["min_tokens"] if s == "train" else test_min})
        except BaseException:
            for later in SPLITS[k + 1 :]:
                writers[later].abort()
            raise
    tok_info_path = Path(tokenizer_path).with_name("tokenizer_info.json")
    tok_used = set(read_json(tok_info_path).get("trained_on_ids", [])) if tok_info_path.exists() else set()
    overlap = len(tok_used & (set(split_ids["dev"]) | set(split_ids["test"])))
    split_stats = {}
    for k, s in enumerate(SPLITS):
        ls = lengths_a[assign == k]
        split_stats[s] = {"docs": int(len(ls)), "tokens": int(ls.sum()), "mean_doc_tokens": float(ls.mean()) if len(ls) else 0.0,
                          "length_histogram": length_histogram(ls.tolist()), "sha256": metas[s]["sha256"]["bin"]}
    manifest = {
        "source": data["source"],
        "source_options": {k: data[k] for k in ("path", "hf_dataset", "hf_subset", "hf_split", "text_column")},
        "tokenizer": str(tokenizer_path),
        "vocab_size": tok.vocab_size,
        "length_unit": f"tokenizer {tokenizer_path}",
        "min_tokens": data["min_tokens"],
        "test_min_tokens": test_min,
        "token_budget": budget,
        "budget_reached": reached,
        "workers": data["workers"],
        "shuffle": ("seeded shuffle of the shard order" + (f" + buffer of {data['shuffle_buffer']}"
                                                          if (data["shuffle_buffer"] or 1) > 1 else "")
                    if data["shuffle"] else "stream order"),
        "split_rule": "held-out = documents >= test_min_tokens with the smallest u = sha256('<seed>:<id>'); "
                      "test first, then dev",
        "documents_seen": seen,
        "documents_kept": len(ids),
        "documents_too_short": sum(s["too_short"] for s in states),
        "documents_empty": sum(s["empty"] for s in states),
        "documents_skipped": dict(skipped),
        "skipped_files": sum((s["skipped_files"] for s in states), [])[:100],
        "tokens_kept": kept_tokens,
        "tokenizer_saw_heldout_documents": overlap,
        "seed": config["seed"],
        "splits": split_stats,
        "seconds": round(time.time() - t0, 2),
    }
    summary = {"tokenizer": str(tokenizer_path), "vocab_size": tok.vocab_size,
               "splits": {s: {k: metas[s][k] for k in ("n_docs", "n_tokens", "max_doc_tokens")} for s in SPLITS},
               "corpus": manifest}
    write_json(out / "manifest.json", summary, what="data manifest", kept=kept)
    shutil.rmtree(work, ignore_errors=True)
    log.info("prepared %d documents, %d tokens (train/dev/test docs %d/%d/%d) in %.1f s", len(ids), kept_tokens,
             split_stats["train"]["docs"], split_stats["dev"]["docs"], split_stats["test"]["docs"], time.time() - t0)
    return summary
