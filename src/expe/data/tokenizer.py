"""One tokenizer interface: train a sentencepiece BPE model on the source's training documents, or
load an existing `tokenizer.model` (the Llama or Mistral tokenizer a user has locally); the workflow's
`tokenizer` step (`build_tokenizer`)."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from expe.errors import DataError
from expe.io import atomic_path, write_json


class Tokenizer:
    def __init__(self, path: str | Path):
        import sentencepiece as spm

        self.path = Path(path)
        if not self.path.exists():
            raise DataError(f"tokenizer file {self.path} not found")
        try:
            self.sp = spm.SentencePieceProcessor(model_file=str(self.path))
        except (OSError, RuntimeError) as e:
            raise DataError(f"tokenizer file {self.path} is not a readable sentencepiece model ({e})") from None

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    @property
    def bos_id(self) -> int:
        return self.sp.bos_id()

    @property
    def eos_id(self) -> int:
        return self.sp.eos_id()

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.sp.encode(texts)

    def decode(self, ids: Iterable[int]) -> str:
        return self.sp.decode([int(i) for i in ids])

    def pieces(self) -> list[str]:
        """The text of every id, a word boundary ("\u2581") written as a leading space."""
        return [self.sp.id_to_piece(i).replace("\u2581", " ") for i in range(self.vocab_size)]


def _lines(texts: Iterable[str], max_chars: int) -> Iterator[str]:
    used = 0
    for text in texts:
        for line in text.split("\n"):
            if line.strip():
                used += len(line)
                yield line
            if used >= max_chars:
                return


def train_tokenizer(texts: Iterable[str], out_path: str | Path, vocab_size: int, max_chars: int,
                    seed: int = 0, threads: int = 1) -> Tokenizer:
    """BPE with byte fallback and identity normalisation, so decode(encode(text)) == text."""
    import sentencepiece as spm

    buf = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=_lines(texts, max_chars),
            model_writer=buf,
            model_type="bpe",
            vocab_size=vocab_size,
            byte_fallback=True,
            character_coverage=0.9999,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            add_dummy_prefix=False,
            split_digits=True,
            max_sentence_length=16384,
            num_threads=max(1, threads),
            shuffle_input_sentence=False,  # deterministic: the same corpus gives the same model
            unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
            minloglevel=2,
        )
    except RuntimeError as e:
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else repr(e)
        raise DataError(f"tokenizer training failed (tokenizer.vocab_size={vocab_size}): {msg}") from None
    with atomic_path(out_path, what="tokenizer") as tmp:
        tmp.write_bytes(buf.getvalue())
    tok = Tokenizer(out_path)
    with atomic_path(Path(out_path).with_suffix(".json"), what="tokenizer description") as tmp:
        tmp.write_text(json.dumps({"vocab_size": tok.vocab_size, "type": "sentencepiece-bpe", "trained": True}))
    return tok


def build_tokenizer(config: dict[str, Any], out_path: str | Path, threads: int = 1,
                    load_dataset: Callable | None = None) -> dict:
    """type: load copies the given model file; type: train trains a BPE model on the source's training
    documents, up to `train_max_chars` characters of them in stream order (`training_texts`)."""
    from expe.data.shards import dtype_for_vocab

    tok_cfg = config["tokenizer"]
    out_path = Path(out_path)
    if tok_cfg["type"] == "load":
        tok = Tokenizer(tok_cfg["path"])
        with atomic_path(out_path, what="tokenizer") as tmp:
            tmp.write_bytes(Path(tok_cfg["path"]).read_bytes())
        used: list[str] = []
    else:
        texts, used = training_texts(config, load_dataset)
        tok = train_tokenizer(texts, out_path, tok_cfg["vocab_size"], tok_cfg["train_max_chars"], config["seed"], threads)
    dtype_for_vocab(tok.vocab_size)  # a vocabulary no shard dtype can hold fails here, not later
    info = {"vocab_size": tok.vocab_size, "path": str(out_path), "type": tok_cfg["type"], "trained_on_ids": used}
    write_json(out_path.with_name("tokenizer_info.json"), info, what="tokenizer info")
    return info


def training_texts(config: dict[str, Any], load_dataset=None) -> tuple[list[str], list[str]]:
    """Texts of training documents only, in stream order, up to the tokenizer's text cap, whatever the
    order of the stream. Which documents are held out is known only once every document is seen
    (data.splits), so the pass keeps texts in stream order up to the cap (plus the expected held-out
    share), then drops the held-out ones; if that leaves the cap unfilled while unread training
    documents remain, a second pass reads on past them. Lengths are estimated as
    bytes / data.bytes_per_token (no tokenizer exists yet)."""
    from expe.data.sources import SourceStats
    from expe.data.splits import doc_hash, predicted_heldout

    data = config["data"]
    cap = int(config["tokenizer"]["train_max_chars"])
    share = sum(x for x in (data["dev_size"], data["test_size"]) if x < 1)  # held-out fraction, when given as one
    reach = cap / max(1e-6, 1 - min(share, 0.9))
    entries: list[tuple[float, int, str]] = []  # (u, estimated tokens, id) of every kept document
    texts: dict[str, str] = {}  # kept texts in stream order
    chars, est_total = 0, 0
    for doc in _kept_docs(config, load_dataset, SourceStats()):
        n = math.ceil(len(doc.text.encode("utf-8")) / data["bytes_per_token"])
        entries.append((doc_hash(config["seed"], doc.id), n, doc.id))
        if chars < reach:
            texts[doc.id] = doc.text
            chars += len(doc.text)
        est_total += n
        if (data["max_docs"] and len(entries) >= data["max_docs"]) or (data["token_budget"] and est_total >= data["token_budget"]):
            break
    if not entries:
        raise DataError(f"data.source {data['source']}: no document of at least data.min_tokens={data['min_tokens']} "
                        f"tokens (estimated as bytes/{data['bytes_per_token']}) to train the tokenizer on")
    held = predicted_heldout(entries, config)
    if len(held) >= len(entries):
        raise DataError(f"tokenizer: no training document to train on: data.dev_size={data['dev_size']:g} and "
                        f"data.test_size={data['test_size']:g} hold out every one of the {len(entries)} documents kept "
                        f"from data.source {data['source']}; lower data.dev_size/test_size or add documents")
    used = [i for i in texts if i not in held]
    chars = sum(len(texts[i]) for i in used)
    if chars < cap and len(texts) < len(entries):  # held-out documents took room: read on past the kept ones
        wanted = {i for _, _, i in entries} - set(texts) - held
        for doc in _kept_docs(config, load_dataset, SourceStats()):
            if chars >= cap or not wanted:
                break
            if doc.id in wanted:
                wanted.discard(doc.id)
                texts[doc.id] = doc.text
                used.append(doc.id)
                chars += len(doc.text)
    return [texts[i] for i in used], used


def _kept_docs(config, load_dataset, stats) -> Iterator:
    """Documents of the source that the preparation would keep (non-empty, >= min_tokens estimated)."""
    from expe.data.sources import Stream

    data = config["data"]
    for w in range(data["workers"]):
        for doc in Stream(config, w, data["workers"], load_dataset).docs(stats):
            if doc.id is None or not doc.text.strip():
                continue
            if math.ceil(len(doc.text.encode("utf-8")) / data["bytes_per_token"]) < data["min_tokens"]:
                continue
            yield doc
