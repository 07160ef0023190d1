"""Training and evaluation speed at the default shapes, against this machine's own limit, side by side.

Prints, in one process (every comparison interleaved, median of repeats):
1. the machine's fp32 matmul rate (a GEMM microbenchmark at 1024^3 and at each model's output-head
   shape), the ceiling the ratios below are taken against;
2. per shape (cpu-small, cpu-S, cpu-M at T = 64, batch 16, vocabulary 2048; the recall study's shape)
   and thread count (1, 2): tokens/s and GFLOP/s of a full training step (forward, backward, clip,
   AdamW), and their ratio to the GEMM rate, for
     before    nn.Dropout (bernoulli_), for-loop AdamW, F.cross_entropy (the package before the speed work)
     after     the package now: dropout mask by torch.rand, fused AdamW, fused cross-entropy on the CPU
     compiled  `after` under torch.compile (with the time the first step took to compile)
     5 seeds   five seeds of `after` as one vmap-batched model (torch.func), per seed
3. glibc's allocator as the package tunes it (expe/malloc.py) against its defaults: fresh processes,
   alternated (the setting is per process), each timing `before` and `after` at 1 thread; so the
   whole gain, the package now against the package before (default allocator), is on one line;
4. per shape, two layouts measured and not adopted: the same tokens as B/4, B/2, B or 5B sequences per
   step (5B: five seeds through one set of weights, an upper bound for training seeds as one batched
   model; B/2, B/4: micro-batches), and the step under CPU bf16 autocast (AMX where the CPU has it);
5. the evaluation forward at 1 ... 64 x L: tokens/s and the time per token relative to 1x, beside the
   growth of the FLOPs per token, and split into the time inside the attention kernel and the rest
   (the rest per token should not grow with the window).

    python bench/train_speed.py                  # everything (about 10 minutes)
    python bench/train_speed.py --quick          # fewer repeats, no compile
    python bench/train_speed.py --cpp-wrapper    # torch.compile with inductor's C++ wrapper

Sections 1, 2, 4 and 5 run with the allocator tuned, as every `expe` command does.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from expe import config as C
from expe import malloc
from expe.nn import model as M
from expe.nn.presets import PRESETS
from expe.training.loop import build_model, make_optimizer
from expe.training.speed import cpuinfo, machine

SHAPES = {  # name: (model entry of config/config.yaml, vocabulary, batch)
    "cpu-small (ExPE)": ("expe", 2048, 16),
    "cpu-S (ExPE S)": ("expe_s", 2048, 16),
    "cpu-M (ExPE M)": ("expe_m", 2048, 16),
    "recall (cpu-recall, V=64, B=32)": ("expe", 64, 32),  # the recall study's model (recall.architecture)
}


def shape_spec(cfg, name):
    entry, vocab, batch = SHAPES[name]
    spec = C.model_spec(cfg, entry, 1)
    if name.startswith("recall"):
        arch = {k: v for k, v in PRESETS[cfg["recall"]["architecture"]].items() if k not in ("vocab_size", "seq_len")}
        spec["model"] = {**spec["model"], **arch}
        spec["train"] = {**spec["train"], **cfg["recall"]["train"]}
    return spec, vocab, batch


_PACKAGE_ATTENTION = M._attention_with_dropout
_PACKAGE_CE = M.cross_entropy


def _torch_cross_entropy(logits, target):
    """The loss before the speed work: log_softmax + nll_loss (F.cross_entropy)."""
    return F.cross_entropy(logits, target, ignore_index=M.IGNORE)


def _sdpa_attention(q, k, v, bias, p):
    """The attention before the speed work: SDPA with its own dropout (math path, bernoulli_ on the CPU)."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=bias is None, attn_mask=bias, dropout_p=p)


def gemm_rate(m: int, k: int, n: int, repeats: int = 20, dtype=torch.float32) -> float:
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    for _ in range(3):
        a @ b
    t = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        t.append(time.perf_counter() - t0)
    return 2 * m * k * n / statistics.median(t) / 1e9


def step_fn(spec, vocab, batch, variant, seed=0):
    """One training step of `spec` at (batch, L) as the package runs it, in one of the variants."""
    torch.manual_seed(seed)
    model, tcfg = build_model(spec, vocab)
    if variant == "before":
        for name, mod in list(model.named_modules()):
            for child, sub in list(mod.named_children()):
                if isinstance(sub, M.Dropout):
                    setattr(mod, child, nn.Dropout(sub.p))
    model.train()
    opt = make_optimizer(model, tcfg, torch.device("cpu"), fused=variant != "before")
    fn = torch.compile(model) if variant == "compiled" else model
    x = torch.from_numpy(np.random.default_rng(seed).integers(0, vocab, (batch, tcfg.seq_len + 1)))

    attention = _sdpa_attention if variant == "before" else _PACKAGE_ATTENTION
    loss_fn = _torch_cross_entropy if variant == "before" else _PACKAGE_CE

    def step():
        M._attention_with_dropout = attention  # module-level: each variant's own, also when interleaved
        M.cross_entropy = loss_fn
        _, loss = fn(x[:, :-1], x[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step, model


def ensemble_step(spec, vocab, batch, seeds=5):
    """`seeds` copies of the model trained as one vmap-batched model (torch.func.stack_module_state)."""
    from torch.func import functional_call, grad_and_value, stack_module_state, vmap

    models = []
    for s in range(seeds):
        torch.manual_seed(s)
        models.append(build_model(spec, vocab)[0].train())
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    grad = vmap(grad_and_value(lambda p, b, x, y: functional_call(base, (p, b), (x, y))[1]), randomness="different")
    opt = torch.optim.AdamW(list(params.values()), lr=1e-3, fused=True)
    x = torch.from_numpy(np.random.default_rng(0).integers(0, vocab, (seeds, batch, spec["train"]["seq_len"] + 1)))

    def step():
        grads, _ = grad(params, buffers, x[:, :, :-1], x[:, :, 1:])
        for k, p in params.items():
            p.grad = grads[k]
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def timed(step, n):
    t = []
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        t.append(time.perf_counter() - t0)
    return statistics.median(t)


def training(spec, vocab, batch, threads, repeats, steps, compile_):
    torch.set_num_threads(threads)
    variants = ["before", "after"] + (["compiled"] if compile_ else [])
    steps_of, compile_s = {}, None
    for v in variants:
        t0 = time.perf_counter()
        steps_of[v] = step_fn(spec, vocab, batch, v)[0]
        steps_of[v]()
        if v == "compiled":
            compile_s = time.perf_counter() - t0
        steps_of[v]()
    times = {v: [] for v in variants}
    for r in range(repeats):  # interleaved, alternating order
        for v in variants if r % 2 == 0 else variants[::-1]:
            times[v].append(timed(steps_of[v], steps))
    ens = ensemble_step(spec, vocab, batch)
    ens()
    ens_t = statistics.median(timed(ens, 2) for _ in range(max(2, repeats // 2))) / 5
    return {v: statistics.median(t) for v, t in times.items()}, {v: (min(t), max(t)) for v, t in times.items()}, \
        ens_t, compile_s


class _AttentionClock:
    """Wraps F.scaled_dot_product_attention (the evaluation's attention) and adds up the time inside it."""

    def __init__(self):
        self.seconds, self.real = 0.0, F.scaled_dot_product_attention

    def __enter__(self):
        def timed_sdpa(*a, **k):
            t0 = time.perf_counter()
            y = self.real(*a, **k)
            self.seconds += time.perf_counter() - t0
            return y
        F.scaled_dot_product_attention = timed_sdpa
        return self

    def __exit__(self, *exc):
        F.scaled_dot_product_attention = self.real


@torch.no_grad()
def evaluation(spec, vocab, multiples, tokens=16384, batch=8):
    """Seconds per token of the evaluation forward (per-token loss) at each multiple of L, and the part
    of it spent inside the attention kernel (medians over repeats)."""
    torch.set_num_threads(1)
    model, tcfg = build_model(spec, vocab)
    model.eval()
    L = tcfg.seq_len
    out, attn = {}, {}
    for k in multiples:
        T = k * L
        b = max(1, min(batch, tokens // T))
        x = torch.from_numpy(np.random.default_rng(0).integers(0, vocab, (b, T + 1)))
        model(x[:, :-1], x[:, 1:], reduction="none")
        n = max(1, tokens // (b * T))
        total, inside = [], []
        for _ in range(n + 2):
            with _AttentionClock() as clock:
                t0 = time.perf_counter()
                model(x[:, :-1], x[:, 1:], reduction="none")
                total.append((time.perf_counter() - t0) / (b * T))  # seconds per token
            inside.append(clock.seconds / (b * T))
        out[k], attn[k] = statistics.median(total), statistics.median(inside)
    return out, attn, model


def batch_layout(spec, vocab, batch, repeats, steps):
    """ms per `batch` sequences of the `after` step when the same tokens come as B/4, B/2, B or 5B
    sequences per step. 5B is five seeds' batches through one set of weights: an upper bound on what
    training seeds as one batched model could gain; B/2 and B/4 are gradient accumulation's micro-batches."""
    torch.set_num_threads(1)
    sizes = [batch // 4, batch // 2, batch, 5 * batch]
    fns = {b: step_fn(spec, vocab, b, "after")[0] for b in sizes}
    for f in fns.values():
        f()
    times = {b: [] for b in sizes}
    for r in range(repeats):
        for b in sizes if r % 2 == 0 else sizes[::-1]:
            times[b].append(timed(fns[b], steps) * batch / b)
    return {b: statistics.median(t) for b, t in times.items()}


def bf16_autocast(spec, vocab, batch, repeats, steps):
    """ms/step of `after` in fp32 and under CPU bf16 autocast (matmuls in bf16, on AMX where the CPU has it)."""
    torch.set_num_threads(1)
    f32 = step_fn(spec, vocab, batch, "after")[0]
    raw = step_fn(spec, vocab, batch, "after")[0]

    def bf16():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            raw()
    fns = {"fp32": f32, "bf16": bf16}
    for f in fns.values():
        f(), f()
    times = {v: [] for v in fns}
    for r in range(repeats):
        for v in ("fp32", "bf16") if r % 2 == 0 else ("bf16", "fp32"):
            times[v].append(timed(fns[v], steps))
    return {v: statistics.median(t) for v, t in times.items()}


def cpu_flags() -> str:
    flags = (cpuinfo("flags") or "").split()
    if not flags:
        return "unknown"
    return " ".join(f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f in flags) or "none of avx512f/avx512_bf16/amx_bf16"


def child(cfg, repeats, steps) -> dict:
    """Section 3, in one process: ms/step of `before` and `after` per shape at 1 thread."""
    out = {}
    for name in SHAPES:
        spec, vocab, batch = shape_spec(cfg, name)
        fns = {v: step_fn(spec, vocab, batch, v)[0] for v in ("before", "after")}
        for f in fns.values():
            f(), f()
        times = {v: [] for v in fns}
        for r in range(repeats):
            for v in (("before", "after") if r % 2 == 0 else ("after", "before")):
                times[v].append(timed(fns[v], steps))
        out[name] = {v: statistics.median(t) for v, t in times.items()}
    return out


def allocator(args) -> None:
    """Section 3: fresh processes alternating glibc's default allocator and the package's tuning."""
    runs = {"default": [], "tuned": []}
    cmd = [sys.executable, __file__, "--child", "--steps", str(args.steps)] + (["--quick"] if args.quick else [])
    for i in range(args.allocator_processes):
        for mode in ("default", "tuned") if i % 2 == 0 else ("tuned", "default"):
            env = {**os.environ, "EXPE_MALLOC_TUNE": "0" if mode == "default" else "1"}
            out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
            runs[mode].append(json.loads(out.strip().splitlines()[-1]))
    n = args.allocator_processes
    print(f"\nglibc allocator, default vs tuned (expe/malloc.py): {n} fresh processes each, alternated; "
          "1 thread; medians over processes")
    for name in SHAPES:
        def med(mode, v):
            return statistics.median(r[name][v] for r in runs[mode])
        bd, ad, bt, at = med("default", "before"), med("default", "after"), med("tuned", "before"), med("tuned", "after")
        per = [d[name]["before"] / t[name]["after"] for d, t in zip(runs["default"], runs["tuned"])]
        print(f"  {name}: ms/step before {1000 * bd:.1f} / after {1000 * ad:.1f} (default allocator), "
              f"before {1000 * bt:.1f} / after {1000 * at:.1f} (tuned); allocator alone {ad / at:.2f}x on `after`, "
              f"{bd / bt:.2f}x on `before`; package now vs before the speed work {bd / at:.2f}x "
              f"(per process pair {min(per):.2f}-{max(per):.2f}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 repeats, no torch.compile")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per repeat")
    ap.add_argument("--allocator-processes", type=int, default=3, help="fresh processes per allocator setting")
    ap.add_argument("--cpp-wrapper", action="store_true",
                    help="compile with inductor's cpp_wrapper (C++ calls between kernels instead of Python)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # one process of section 3
    args = ap.parse_args()
    if args.cpp_wrapper and args.quick:
        ap.error("--cpp-wrapper changes only the torch.compile measurement, which --quick skips")
    if args.cpp_wrapper:
        import torch._inductor.config as inductor_config

        inductor_config.cpp_wrapper = True
    tuned = malloc.tune()  # what every `expe` command does first; EXPE_MALLOC_TUNE=0 (section 3) leaves the default
    repeats = 3 if args.quick else args.repeats
    cfg = C.load("config/config.yaml")
    torch.set_num_threads(1)
    if args.child:
        print(json.dumps(child(cfg, repeats, args.steps)))
        return
    print(json.dumps(machine() | {"allocator_tuned": tuned}))
    gemm = gemm_rate(1024, 1024, 1024)
    print(f"GEMM fp32, 1 thread: {gemm:.1f} GFLOP/s at 1024^3 (the ceiling below)")
    print(f"GEMM bf16, 1 thread: {gemm_rate(1024, 1024, 1024, dtype=torch.bfloat16):.1f} GFLOP/s at 1024^3 "
          f"(CPU flags: {cpu_flags()})")
    allocator(args)
    for name in SHAPES:
        spec, vocab, batch = shape_spec(cfg, name)
        L = spec["train"]["seq_len"]
        d = spec["model"].get("d_model")
        head = gemm_rate(batch * L, d, vocab)
        flops_tok = build_model(spec, vocab)[0].flops_per_token(L)
        print(f"\n{name}: {flops_tok / 1e6:.2f} MFLOP per training token; the output head's GEMM "
              f"({batch * L}x{d}x{vocab}) runs at {head:.1f} GFLOP/s")
        for threads in (1, 2):
            med, rng, ens, comp = training(spec, vocab, batch, threads, repeats, args.steps, not args.quick and threads == 1)
            for v, t in med.items():
                tok = batch * L / t
                print(f"  {threads} thread(s) {v:9s} {1000 * t:7.1f} ms/step (range {1000 * rng[v][0]:.1f}-"
                      f"{1000 * rng[v][1]:.1f}), {tok:9,.0f} tokens/s, {flops_tok * tok / 1e9:6.1f} GFLOP/s = "
                      f"{flops_tok * tok / 1e9 / (gemm * threads):5.1%} of the GEMM rate x threads")
            floor = flops_tok * batch * L / (gemm * 1e9 * threads)  # every FLOP at the GEMM rate, nothing else
            print(f"  {threads} thread(s) matmul floor (the step's FLOPs at the GEMM rate x threads, all else "
                  f"free): {1000 * floor:.1f} ms/step; before/floor = {med['before'] / floor:.2f}x is the most "
                  f"any change short of fewer or faster matmuls could gain")
            print(f"  {threads} thread(s) after/before: {med['before'] / med['after']:.2f}x faster"
                  + (f"; compiled/after: {med['after'] / med['compiled']:.2f}x (first step {comp:.1f} s with compilation)"
                     if "compiled" in med else ""))
            print(f"  {threads} thread(s) 5 seeds as one vmap model: {1000 * ens:.1f} ms/step per seed = "
                  f"{med['after'] / ens:.2f}x the single-seed `after`")
        lay = batch_layout(spec, vocab, batch, repeats, args.steps)
        print(f"  1 thread, the same tokens as B/4, B/2, B, 5B sequences per step (ms per {batch} sequences; "
              f"5B = five seeds through one set of weights): " + ", ".join(
                  f"B={b} {1000 * t:.1f} ({lay[batch] / t:.2f}x)" for b, t in lay.items()))
        bf = bf16_autocast(spec, vocab, batch, repeats, args.steps)
        print(f"  1 thread, bf16 autocast: {1000 * bf['bf16']:.1f} ms/step vs fp32 {1000 * bf['fp32']:.1f} "
              f"= {bf['fp32'] / bf['bf16']:.2f}x")
        if vocab == 2048:
            ev, inside, model = evaluation(spec, vocab, [1, 2, 4, 8, 16, 64])
            c = model.cfg
            base_flops = 2 * (model.flops_per_token(L) - 12 * c.n_layer * c.d_model * L) / 6  # forward, no attention
            print(f"  evaluation forward (1 thread, ~16k tokens per length): " + ", ".join(
                f"{k}x {1 / ev[k]:,.0f} tok/s" for k in ev))
            for k in (16, 64):
                attn = lambda T: base_flops + 4 * c.n_layer * c.d_model * T / 2  # causal: half of QK^T and AV
                rest = (ev[k] - inside[k]) / (ev[1] - inside[1])
                print(f"  {k}x L: time per token {ev[k] / ev[1]:.2f}x the 1x time; FLOPs per token "
                      f"{attn(k * L) / attn(L):.2f}x; inside the attention kernel {1e9 * inside[1]:.0f} -> "
                      f"{1e9 * inside[k]:.0f} ns/token ({inside[k] / inside[1]:.1f}x); everything else per token "
                      f"{rest:.2f}x the 1x time")


if __name__ == "__main__":
    main()
