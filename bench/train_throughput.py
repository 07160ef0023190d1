"""Training throughput of every registered encoding, side by side with Hugging Face's
LlamaForCausalLM of the same shape, in one process with interleaved repeats.

    python bench/train_throughput.py [--d-model 256 --n-layer 4 --n-head 4 --vocab 2048 --seq-len 256
                                      --batch 8 --repeats 5 --threads 2]

Every model is the package's Llama architecture (RMSNorm, SwiGLU, no biases, untied head) with one
encoding; the reference is `transformers.LlamaForCausalLM` (sdpa attention) with the same hidden,
intermediate and vocabulary sizes (install the `bench` extra; skipped with a note if missing). A step
is forward, backward, gradient clipping and an AdamW update. Prints tokens/s (median and range over
repeats), ratios to NoPE and to the reference, peak memory (CUDA: allocator peak; CPU: peak RSS of a
separate process running the same steps), the machine and its load average.
Targets (2-core CPU): RoPE >= 1.1x the reference; ExPE, ExQPE >= 0.98x NoPE; ALiBi >= 0.97x NoPE.
"""

import argparse
import json
import os
import subprocess
import sys

import torch
import torch.nn.functional as F

from expe.nn.registry import REGISTRY
from expe.nn.model import ModelConfig, Transformer
from expe.training.speed import interleaved, machine, paired_ratio

ENCODINGS = [n for n in REGISTRY if n not in ("expe_learned", "expe_learned_init")] + ["expe_learned_init"]


def model_config(args, pe: str) -> ModelConfig:
    return ModelConfig(vocab_size=args.vocab, seq_len=args.seq_len, d_model=args.d_model, n_layer=args.n_layer,
                       n_head=args.n_head, arch="llama", dropout=0.0, tie_embeddings=False, pe={"name": pe})


def hf_model(args):
    from transformers import LlamaConfig, LlamaForCausalLM

    ours = model_config(args, "rope")
    cfg = LlamaConfig(vocab_size=args.vocab, hidden_size=args.d_model, intermediate_size=ours.hidden,
                      num_hidden_layers=args.n_layer, num_attention_heads=args.n_head,
                      num_key_value_heads=args.n_head, max_position_embeddings=args.seq_len, rms_norm_eps=1e-5,
                      tie_word_embeddings=False, attention_bias=False, mlp_bias=False)
    cfg._attn_implementation = "sdpa"
    return LlamaForCausalLM(cfg)


def builder(args, name: str, device: torch.device):
    def build():
        torch.manual_seed(0)
        if name == "hf_llama":
            model = hf_model(args).to(device).train()

            def loss_fn(x):
                logits = model(input_ids=x[:, :-1]).logits
                return F.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten())
        else:
            model = Transformer(model_config(args, name)).to(device).train()

            def loss_fn(x):
                return model(x[:, :-1], x[:, 1:])[1]
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
        x = torch.randint(0, args.vocab, (args.batch, args.seq_len + 1), device=device)

        def step():
            loss = loss_fn(x)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)

        return step, args.batch * args.seq_len

    return build


def params(args, name: str) -> int:
    m = hf_model(args) if name == "hf_llama" else Transformer(model_config(args, name))
    return sum(p.numel() for p in m.parameters())


def peak_rss_mb(args, name: str) -> float:
    """Peak RSS of a fresh process that builds `name` and runs warmup + steps training steps."""
    code = (f"import sys, json, resource, torch; sys.argv=['x']; torch.set_num_threads({args.threads});"
            f"sys.path.insert(0, {os.path.dirname(__file__)!r}); import train_throughput as t;"
            f"a=t.parser().parse_args({json.dumps(raw_args(args))});"
            f"s,_=t.builder(a,{name!r},torch.device('cpu'))();"
            f"[s() for _ in range(a.warmup + a.steps)];"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return float(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else float("nan")


def raw_args(args) -> list[str]:
    return [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
            if k not in ("no_memory", "no_hf", "json", "variants") and v is not None]


def parser():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per repeat")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--variants", help="comma-separated subset of the encodings (default: all registered)")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    ap.add_argument("--no-hf", action="store_true", help="skip the Hugging Face reference")
    ap.add_argument("--json", help="also write the measurements here")
    return ap


def main():
    args = parser().parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    names = args.variants.split(",") if args.variants else list(ENCODINGS)
    names = [n for n in names if n != "hf_llama"]
    if "nope" not in names:
        names.insert(0, "nope")
    note = ""
    if not args.no_hf:
        try:
            import transformers  # noqa: F401

            names.append("hf_llama")
        except ImportError:
            note = "transformers is not installed (pip install -e '.[bench]'): no Hugging Face reference"
    print(json.dumps(machine()))
    print(f"shape: d={args.d_model}, {args.n_layer} layers, {args.n_head} heads, vocab {args.vocab}, T={args.seq_len}, "
          f"batch {args.batch}; {args.repeats} interleaved repeats of {args.steps} steps; {args.threads} threads")
    if note:
        print("note:", note)
    res = interleaved({n: builder(args, n, device) for n in names}, args.steps, args.warmup, args.repeats, device)
    if device.type == "cpu" and not args.no_memory:
        for n in names:
            res[n]["peak_mem_mb"] = round(peak_rss_mb(args, n), 1)
    print(f"\n{'variant':18s} {'params':>9s} {'tokens/s':>9s} {'range':>13s} {'x NoPE (range)':>19s} "
          f"{'x HF (range)':>19s} {'peak MB':>8s}")
    for n in names:
        r = res[n]
        lo = r["tokens_per_step"] / (r["max_ms"] / 1000)
        hi = r["tokens_per_step"] / (r["min_ms"] / 1000)
        xn = "{:.3f} ({:.2f}-{:.2f})".format(*paired_ratio(r, res["nope"]))
        xh = "{:.3f} ({:.2f}-{:.2f})".format(*paired_ratio(r, res["hf_llama"])) if "hf_llama" in res else "n/a"
        mem = r["peak_mem_mb"] if r["peak_mem_mb"] is not None else float("nan")
        print(f"{n:18s} {params(args, n):9,d} {r['tokens_per_s']:9,.0f} {lo:6,.0f}-{hi:<6,.0f} {xn:>19s} {xh:>19s} "
              f"{mem:8.1f}")
    print("ratios: median over repeats of the per-repeat throughput ratio (range: min-max over repeats)")
    checks = [("rope", "hf_llama", 1.10), ("expe", "nope", 0.98), ("exqpe", "nope", 0.98), ("alibi", "nope", 0.97)]
    print()
    for a, b, target in checks:
        if b in res:
            ratio = paired_ratio(res[a], res[b])[0]
            print(f"target {a} >= {target:.2f}x {b}: {'met' if ratio >= target else 'NOT met'} ({ratio:.3f}x)")
    print(json.dumps({"load_average_after": machine()["load_average_1_5_15"]}))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "machine": machine(), "results": res}, f, indent=2)


if __name__ == "__main__":
    main()
