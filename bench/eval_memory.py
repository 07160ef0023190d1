"""Time and peak memory of the evaluation forward (no grad, batch 1) at 1x ... 16x the training
length, for every encoding, each in a fresh process (so the peak is that of one length only).

    python bench/eval_memory.py                                   # the CPU shape of bench/train_throughput.py
    python bench/eval_memory.py --preset paper-M --lengths 8192 --encodings nope,rope,alibi,expe

Peak memory: the CUDA allocator's peak on a GPU, the process's peak RSS on CPU (including the
weights and the interpreter). ALiBi's bias is one (1, H, T, T) tensor per forward, shared by every
layer, so its memory does not grow with the number of layers.
"""

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time, torch
from expe.nn.model import ModelConfig, Transformer
from expe.nn.presets import PRESETS
a = json.loads(sys.argv[1])
torch.set_num_threads(a["threads"])
dev = torch.device(a["device"])
if a["preset"]:
    cfg = dict(PRESETS[a["preset"]])
    cfg.pop("seq_len"); cfg["dropout"] = 0.0
else:
    cfg = dict(arch="llama", d_model=a["d_model"], n_layer=a["n_layer"], n_head=a["n_head"], vocab_size=a["vocab"],
               dropout=0.0)
m = Transformer(ModelConfig(**cfg, seq_len=a["seq_len"], pe={"name": a["pe"]})).to(dev).eval()
x = torch.randint(0, cfg["vocab_size"], (1, a["T"] + 1), device=dev)
with torch.no_grad():
    m(x[:, :-1], x[:, 1:], reduction="none")
    if dev.type == "cuda":
        torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for _ in range(a["repeats"]):
        m(x[:, :-1], x[:, 1:], reduction="none")
    if dev.type == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t) / a["repeats"]
peak = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": dt, "peak_mb": peak}))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", help="an architecture preset (e.g. paper-M); default: the shape below")
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--seq-len", type=int, default=256, help="training length L")
    ap.add_argument("--multiples", default="1,2,4,8,16")
    ap.add_argument("--lengths", help="explicit T values instead of multiples of L")
    ap.add_argument("--encodings", default="nope,sinusoidal,rope,alibi,expe,exqpe")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    from expe.training.speed import machine

    lengths = [int(t) for t in args.lengths.split(",")] if args.lengths else \
        [k * args.seq_len for k in map(int, args.multiples.split(","))]
    print(json.dumps(machine()))
    print(f"shape: {args.preset or f'd={args.d_model}, {args.n_layer} layers, {args.n_head} heads'}; batch 1; "
          f"median of {args.repeats} forwards after one warm-up; device {args.device}")
    print(f"{'encoding':12s} " + " ".join(f"{'T=' + str(t):>20s}" for t in lengths))
    rows = {}
    for pe in args.encodings.split(","):
        cells = []
        for T in lengths:
            a = {**vars(args), "pe": pe, "T": T}
            r = subprocess.run([sys.executable, "-c", CHILD, json.dumps(a)], capture_output=True, text=True)
            if r.returncode != 0:
                cells.append("failed: " + (r.stderr.strip().splitlines() or ["?"])[-1][:40])
                continue
            v = json.loads(r.stdout.strip().splitlines()[-1])
            rows.setdefault(pe, {})[T] = v
            cells.append(f"{v['seconds']:7.3f} s {v['peak_mb']:7.0f} MB")
        print(f"{pe:12s} " + " ".join(f"{c:>20s}" for c in cells))
    if "nope" in rows:
        print()
        for pe, r in rows.items():
            ratios = [r[T]["seconds"] / rows["nope"][T]["seconds"] for T in lengths if T in r and T in rows["nope"]]
            print(f"{pe:12s} time / NoPE at each length: " + ", ".join(f"{x:.2f}" for x in ratios))


if __name__ == "__main__":
    main()
