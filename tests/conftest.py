import os

import numpy as np
import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from expe.data.shards import ShardWriter  # noqa: E402

VOCAB = 97


def write_shards(directory, docs_by_split, vocab=VOCAB):
    for split, docs in docs_by_split.items():
        w = ShardWriter(directory, split, vocab)
        for d in docs:
            w.add(d)
        w.close()
    return directory


@pytest.fixture
def shards(tmp_path):
    """Synthetic token shards: a learnable pattern (token t+1 = t + 1 mod VOCAB, noisy start)."""
    rng = np.random.default_rng(0)

    def doc(n):
        start = rng.integers(0, VOCAB)
        return (start + np.arange(n)) % VOCAB

    return write_shards(tmp_path / "shards", {
        "train": [doc(n) for n in (400, 700, 300)],
        "dev": [doc(300)],
        "test": [doc(n) for n in (600, 260)],
    })


def tiny_spec(name="expe", pe=None, **train):
    t = dict(seq_len=16, batch_size=4, grad_accum=1, steps=12, lr=3e-3, end_lr=3e-4, schedule="cosine",
             warmup_ratio=0.1, betas=[0.9, 0.95], weight_decay=0.1, grad_clip=1.0, precision="fp32",
             checkpoint_every=4, log_every=2)
    t.update(train)
    return {
        "name": name,
        "seed": 3,
        "model": {"arch": "gpt", "d_model": 32, "n_layer": 2, "n_head": 2, "dropout": 0.1,
                  "pe": pe or {"name": "expe"}},
        "train": t,
    }
