"""Fixtures and helpers shared by the tests: synthetic token shards and corpora, a tiny training spec,
configs, and running Snakemake as a user would (from a venv that was never activated)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from expe import config as C  # noqa: E402
from expe.data.shards import ShardWriter  # noqa: E402
from expe.report import catalog  # noqa: E402

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


# --------------------------------------------------------------------------- corpora and configs

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
        "eval": {"multiples": [1], "sliding": {"multiples": [1]}},
        "beyond": {"passkey": {"multiples": [1]}, "precision": {"multiples": [1]},
                   "retrieval": {"segment": 2, "distances": [0.5]}},
        "models": {"m": {"architecture": "cpu-small", "pe": {"name": "expe"}}},
    }
    return C.validate(cfg)


# --------------------------------------------------------------------------- Snakemake

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
TABLES = list(catalog.TABLES)
# as if the venv were never activated: its bin/ is not on PATH (no `expe` command to find there)
UNACTIVATED = {**os.environ, "PATH": os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                                                     if Path(p).resolve() != Path(sys.executable).parent.resolve()),
               "VIRTUAL_ENV": ""}


def smk(*args, cwd, timeout=600, check=True):
    r = subprocess.run(SNAKEMAKE + list(args), cwd=cwd, capture_output=True, text=True, timeout=timeout,
                       env=UNACTIVATED)
    if check and r.returncode != 0:
        raise AssertionError(r.stdout[-3000:] + r.stderr[-3000:])
    return r


def job_counts(output: str) -> dict[str, int]:
    """Parse Snakemake's 'Job stats' table."""
    lines = output.split("Job stats:")[1].splitlines()[3:]
    counts = {}
    for ln in lines:
        parts = ln.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    return counts


def write_config(path, base="config/smoke.yaml", **changes):
    cfg = yaml.safe_load((REPO / base).read_text())
    cfg = C.deep_merge(cfg, changes)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return str(path)
