"""fp32 matmuls computed in bf16 on the CPU's AMX units, the CPU counterpart of TF32 on a GPU:
`torch.backends.mkldnn.matmul.fp32_precision = "bf16"` keeps weights and activations in fp32 and lets
oneDNN round the matmul inputs to bf16 (fp32 accumulation). Measured here, not adopted.

Prints, in one process, 1 thread, allocator tuned as every `expe` command does:
1. the fp32 GEMM rate with the setting off ("ieee") and on ("bf16") at 1024^3 and at the models' shapes;
2. per default shape (those of bench/train_speed.py): ms per training step of `before` (the package
   before the speed work), `after` (the package now) and `after` with the setting on, interleaved,
   median of repeats;
3. at the recall shape, torch.profiler's self time per step of the matmuls and of the CPU flash
   attention kernel, with the setting off and on (where the time goes when it is on).

    python bench/cpu_bf16_matmul.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(__file__))
import train_speed as TS  # noqa: E402  (the shapes and step functions of the main speed benchmark)

from expe import config as C  # noqa: E402
from expe import malloc  # noqa: E402
from expe.training.speed import cpuinfo  # noqa: E402

MK = torch.backends.mkldnn.matmul


def gemm(m, k, n, precision):
    MK.fp32_precision = precision
    try:
        return TS.gemm_rate(m, k, n)
    finally:
        MK.fp32_precision = "ieee"


def profile_split(step, precision, steps=10):
    MK.fp32_precision = precision
    try:
        step()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                step()
    finally:
        MK.fp32_precision = "ieee"
    ms = {"mm + addmm": 0.0, "flash attention (fwd + bwd)": 0.0, "everything": 0.0}
    for e in prof.key_averages():
        t = e.self_cpu_time_total / 1000 / steps
        ms["everything"] += t
        if e.key in ("aten::mm", "aten::addmm", "aten::bmm"):
            ms["mm + addmm"] += t
        elif e.key.startswith("aten::_scaled_dot_product_flash_attention_for_cpu"):
            ms["flash attention (fwd + bwd)"] += t
    return ms


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per repeat")
    args = ap.parse_args()
    malloc.tune()
    torch.set_num_threads(1)
    flags = (cpuinfo("flags") or "").split()
    amx = " ".join(f for f in flags if f.startswith("amx") or f == "avx512_bf16") or "none"
    print(f"torch {torch.__version__}; CPU: {cpuinfo('model name')} (bf16 units: {amx}); 1 thread; "
          f"load average {os.getloadavg()[0]:.2f}")
    print("fp32_precision setting available:", getattr(MK, "fp32_precision", None) is not None)
    cfg = C.load("config/config.yaml")

    print("\n1. fp32 GEMM rate, GFLOP/s (setting off 'ieee' / on 'bf16')")
    for m, k, n in [(1024, 1024, 1024), (1024, 64, 2048), (1024, 96, 2048), (2048, 64, 256), (2048, 256, 64)]:
        a, b = gemm(m, k, n, "ieee"), gemm(m, k, n, "bf16")
        print(f"   {m} x {k} x {n}: {a:7.1f} / {b:7.1f}  ({b / a:.2f}x)")

    print(f"\n2. ms per training step, interleaved, median of {args.repeats} repeats of {args.steps} steps")
    print(f"   {'shape':34s} {'before':>8s} {'after':>8s} {'after+bf16':>11s}  after/before  (after+bf16)/before")
    variants = [("before", "ieee"), ("after", "ieee"), ("after", "bf16")]
    recall_after = None
    for name in TS.SHAPES:
        spec, vocab, batch = TS.shape_spec(cfg, name)
        steps = {v: TS.step_fn(spec, vocab, batch, v)[0] for v in ("before", "after")}
        for v, p in variants:
            MK.fp32_precision = p
            steps[v]()
            steps[v]()
        times = {vp: [] for vp in variants}
        for r in range(args.repeats):
            for v, p in variants if r % 2 == 0 else variants[::-1]:
                MK.fp32_precision = p
                times[(v, p)].append(TS.timed(steps[v], args.steps))
        MK.fp32_precision = "ieee"
        med = {vp: 1000 * statistics.median(t) for vp, t in times.items()}
        b, a, a16 = med[variants[0]], med[variants[1]], med[variants[2]]
        print(f"   {name:34s} {b:8.1f} {a:8.1f} {a16:11.1f}  {b / a:11.2f}x  {b / a16:17.2f}x", flush=True)
        if name.startswith("recall"):
            recall_after = steps["after"]

    print("\n3. recall shape, `after`: torch.profiler self time, ms per step (setting off / on)")
    off, on = profile_split(recall_after, "ieee"), profile_split(recall_after, "bf16")
    for k in off:
        print(f"   {k:30s} {off[k]:6.2f} / {on[k]:6.2f}")


if __name__ == "__main__":
    main()
