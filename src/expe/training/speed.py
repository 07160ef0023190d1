"""Training step time, measured side by side in one process (the `speed` rule and
`bench/train_throughput.py`): for every model, `warmup` steps after building it, then `steps`
timed optimizer steps; the models take turns for `repeats` rounds (interleaved, so a change in
machine load hits every model alike), and each is rebuilt per round so only one is in memory.
The tables report the median step time and its range, and ratios of medians."""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Any, Callable

import numpy as np
import torch

from expe.runtime import autocast, grad_scaler, resolve_device, resolve_precision, set_threads


def cpuinfo(field: str) -> str | None:
    """The first value of `field` in /proc/cpuinfo ("model name", "flags"); None where there is none."""
    try:
        return next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                     if line.split(":", 1)[0].strip() == field), None)
    except OSError:
        return None


def machine() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (None, None, None)
    info = {"machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "load_average_1_5_15": [round(x, 2) for x in load] if load[0] is not None else None}
    model = cpuinfo("model name")  # platform.processor() is only "x86_64" on Linux
    if model:
        info["cpu_model"] = model
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def time_steps(step: Callable[[], Any], n: int, device: torch.device) -> float:
    """Seconds per call of `step`, over n calls (synchronised on CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) / n


def interleaved(builders: dict[str, Callable[[], tuple[Callable[[], Any], int]]], steps: int, warmup: int,
                repeats: int, device: torch.device, log: Callable[[str], None] = print) -> dict[str, Any]:
    """builders: name -> () -> (one training step, tokens per step). Returns per-name step times."""
    out: dict[str, Any] = {name: {"step_ms": [], "peak_mem_mb": None} for name in builders}
    names = list(builders)
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):  # alternate the order: no model always goes first
            build = builders[name]
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            step, tokens = build()
            for _ in range(warmup):
                step()
            dt = time_steps(step, steps, device)
            out[name]["step_ms"].append(round(1000 * dt, 3))
            out[name]["tokens_per_step"] = tokens
            if device.type == "cuda":
                out[name]["peak_mem_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
            del step
        log(f"repeat {r + 1}/{repeats}: " + ", ".join(f"{n} {out[n]['step_ms'][-1]:.1f} ms" for n in names))
    for name, v in out.items():
        ms = v["step_ms"]
        v.update(median_ms=statistics.median(ms), min_ms=min(ms), max_ms=max(ms),
                 tokens_per_s=v["tokens_per_step"] / (statistics.median(ms) / 1000))
    return out


def training_step(spec: dict[str, Any], vocab_size: int, device: torch.device, batch_source=None):
    """A closure running one optimizer step of `spec` (its batch, accumulation, precision), as in training."""
    from expe.training.loop import build_model, make_optimizer

    torch.manual_seed(spec["seed"])
    model, tcfg = build_model(spec, vocab_size)
    model.to(device).train()
    opt = make_optimizer(model, tcfg, device)
    precision = resolve_precision(device, tcfg.precision)
    scaler = grad_scaler(device, precision)
    fn = torch.compile(model) if tcfg.compile else model
    rng = np.random.default_rng(0)
    batches = [torch.from_numpy(batch_source(tcfg, i) if batch_source else
                                rng.integers(0, vocab_size, (tcfg.batch_size, tcfg.seq_len + 1))).to(device)
               for i in range(tcfg.grad_accum)]

    def step():
        for b in batches:
            with autocast(device, precision):
                _, loss = fn(b[:, :-1], b[:, 1:])
            scaler.scale(loss / tcfg.grad_accum).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

    return step, tcfg.tokens_per_step


def measure_specs(specs: dict[str, dict[str, Any]], sp: dict[str, Any], data_dir, device: str = "auto",
                  threads: int = 1, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The `speed` rule: every model spec (name -> spec) at its training shape, on batches of the training
    shard; `sp`: the config's `speed` settings."""
    from expe.data.shards import TokenShard, WindowSampler

    set_threads(threads)
    dev = resolve_device(device)
    shard = TokenShard(data_dir, "train")
    builders = {}
    for m, spec in specs.items():
        sampler = WindowSampler(shard, spec["train"]["seq_len"], spec["seed"])
        builders[m] = (lambda spec=spec, sampler=sampler:
                       training_step(spec, shard.vocab_size, dev, lambda t, i: sampler.batch(0, i, t.batch_size)))
    res = interleaved(builders, sp["steps"], sp["warmup"], sp["repeats"], dev, log)
    for m in specs:
        res[m]["processes"] = 1
        res[m]["precision"] = resolve_precision(dev, specs[m]["train"]["precision"])
    return {"device": str(dev), "machine": machine(), "settings": sp, "models": res,
            "note": "median step time of `steps` optimizer steps per repeat; models interleaved and run alone"}


def paired_ratio(a: dict, b: dict) -> tuple[float, float, float]:
    """Throughput of a relative to b: the median of per-repeat ratios (a and b ran back to back in each
    repeat, so slow drifts of the machine cancel), with their min and max."""
    ratios = sorted(y / x for x, y in zip(a["step_ms"], b["step_ms"]))  # b's time / a's time = a's speed-up
    return statistics.median(ratios), ratios[0], ratios[-1]
