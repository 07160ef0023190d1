"""One tokenizer interface: train a sentencepiece BPE model on the training split, or load an
existing `tokenizer.model` (the Llama or Mistral tokenizer a user has locally)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Iterable, Iterator

from expe.errors import DataError
from expe.io import atomic_path


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
    with atomic_path(out_path) as tmp:
        tmp.write_bytes(buf.getvalue())
    tok = Tokenizer(out_path)
    with atomic_path(Path(out_path).with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps({"vocab_size": tok.vocab_size, "type": "sentencepiece-bpe", "trained": True}))
    return tok
