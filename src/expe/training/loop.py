"""The training loop: AdamW, warm-up then cosine/linear decay, accumulation, clipping, checkpoints,
data-parallel training under torchrun (`dist.py`), live trackers (`trackers.py`).

A run is described by a *spec* (`expe.config.model_spec`): {name, seed, model, train} and, for the
recall study, a synthetic `task`. The data position is the step counter (batches are pure functions
of seed, step and micro-batch) and dropout is seeded from (seed, step, rank), so a run resumed from a
checkpoint reproduces the uninterrupted one bit for bit. SIGTERM (Slurm preemption) and Ctrl-C write
a checkpoint first.

With N processes (DDP), every micro-batch of `batch_size` windows is split row-wise over the ranks
and gradients are averaged: the global batch, schedule and data order are those of one process.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from expe.errors import ConfigError, TrainingDiverged
from expe.io import atomic_path, ensure_dir, exclusive, guard_write, sha256_file, write_json
from expe.nn.model import IGNORE, ModelConfig, Transformer
from expe.runtime import autocast, grad_scaler, peak_flops, resolve_precision, set_threads
from expe.training.checkpoint import Checkpointer
from expe.training.config import TrainConfig
from expe.training.dist import Dist, setup

log = logging.getLogger("expe.train")


def build_model(spec: dict[str, Any], vocab_size: int) -> tuple[Transformer, TrainConfig]:
    tcfg = TrainConfig(**spec["train"])
    mcfg = ModelConfig(**{**spec["model"], "vocab_size": vocab_size, "seq_len": tcfg.seq_len})
    return Transformer(mcfg), tcfg


def make_optimizer(model: Transformer, tcfg: TrainConfig, device: torch.device, fused: bool = True) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only; the fused kernel (one per parameter group, on CPU as on
    CUDA) replaces ~10 small operations per parameter tensor (bench/train_speed.py measures it)."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]  # norms, biases, learned S/theta
    groups = [{"params": decay, "weight_decay": tcfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=tcfg.lr, betas=tuple(tcfg.betas),
                             fused=fused and device.type in ("cpu", "cuda"), foreach=False if not fused else None)


def make_sampler(spec: dict[str, Any], data_dir: str | Path | None):
    """(sampler, vocabulary size): training windows of the token shards, or a synthetic recall task."""
    if spec.get("task"):
        from expe.data.synthetic import make_task

        task = make_task(spec["task"], spec["train"]["seq_len"], spec["seed"])
        return task, task.vocab_size
    from expe.data.shards import TokenShard, WindowSampler

    if data_dir is None:
        raise ConfigError("train: --data (the shards folder) is required for a language model")
    shard = TokenShard(data_dir, "train")
    sampler = WindowSampler(shard, spec["train"]["seq_len"], spec["seed"])
    if spec.get("augment"):
        from expe.data.synthetic import CopyAugmented

        sampler = CopyAugmented(sampler, **spec["augment"])
    return sampler, shard.vocab_size


class _Preemption:
    """SIGTERM (Slurm preemption, time limit) or Ctrl-C sets a flag; the loop checkpoints at the end
    of the current step and exits 143 (SIGTERM) or 130 (Ctrl-C)."""

    def __init__(self):
        self.requested = False
        self.signum = signal.SIGTERM

    def __enter__(self):
        self._old = {s: signal.signal(s, self._handler) for s in (signal.SIGTERM, signal.SIGINT)}
        return self

    def _handler(self, signum, frame):
        self.requested = True
        self.signum = signum

    def __exit__(self, *exc):
        for s, old in self._old.items():
            signal.signal(s, old)


class Preempted(SystemExit):
    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__(128 + int(signum))


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines at or after `step` (written after the checkpoint we resume from)."""
    if not path.exists():
        return
    keep = []
    for ln in path.read_text().splitlines():
        try:
            if ln and json.loads(ln)["step"] < step:
                keep.append(ln)
        except (json.JSONDecodeError, KeyError):
            break  # a line cut by a kill: everything after it is newer than the checkpoint anyway
    with atomic_path(path, what="training metrics") as tmp:
        tmp.write_text("".join(ln + "\n" for ln in keep))


def _step_seed(seed: int, step: int, rank: int) -> int:
    """Dropout's RNG seed for one step on one rank: resuming needs no saved RNG state."""
    return (seed * 1_000_003 + step * 1009 + rank) % (2**63)


class _Loader:
    """(inputs, targets) of the next micro-batch, read (and, on CUDA, pinned) in a background thread
    while the current one computes; the copy to the GPU is asynchronous. A sampler returns either
    windows of T + 1 tokens or an (inputs, targets) pair whose unscored targets are -100."""

    def __init__(self, sampler, tcfg: TrainConfig, dist: Dist, device: torch.device):
        self.sampler, self.tcfg, self.dist, self.device = sampler, tcfg, dist, device
        self.rows = tcfg.batch_size // dist.world_size
        self.pool = ThreadPoolExecutor(1)
        self.pending = None

    def _read(self, step: int, micro: int) -> tuple[torch.Tensor, torch.Tensor]:
        full = self.sampler.batch(step, micro, self.tcfg.batch_size)  # the one-process batch ...
        x, y = (full[:, :-1], full[:, 1:]) if isinstance(full, np.ndarray) else full
        mine = slice(self.dist.rank * self.rows, (self.dist.rank + 1) * self.rows)  # ... this rank's rows
        x, y = (torch.from_numpy(np.ascontiguousarray(a[mine])) for a in (x, y))
        return (x.pin_memory(), y.pin_memory()) if self.device.type == "cuda" else (x, y)

    def __call__(self, step: int, micro: int) -> tuple[torch.Tensor, torch.Tensor]:
        key = (step, micro)
        if self.pending is not None and self.pending[0] == key:
            x, y = self.pending[1].result()
        else:
            x, y = self._read(step, micro)
        nxt = (step, micro + 1) if micro + 1 < self.tcfg.grad_accum else (step + 1, 0)
        if nxt[0] < self.tcfg.steps:
            self.pending = (nxt, self.pool.submit(self._read, *nxt))
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def close(self):
        self.pool.shutdown(wait=False, cancel_futures=True)


def train(spec: dict[str, Any], data_dir: str | Path | None, out_dir: str | Path, ckpt_dir: str | Path,
          threads: int = 1, device: str = "auto", stop_after: int | None = None, progress: bool = True,
          track: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train `spec` on `<data_dir>/train.*` (or its synthetic task); write `model.safetensors`,
    `config.json`, `metrics.jsonl` to out_dir. `track`: {dir, group} of the live trackers named in
    spec['train']['trackers'].

    Under torchrun every rank calls this; rank 0 writes checkpoints, metrics and the final files."""
    set_threads(threads)
    wall0 = time.time()
    dist = setup(device)
    try:  # one training process per checkpoint folder (rank 0 holds it for the others)
        with exclusive(ckpt_dir, "checkpoint folder") if dist.is_main else contextlib.nullcontext():
            trainer = Trainer(spec, data_dir, ckpt_dir, dist, progress, track)
            return trainer.run(out_dir, stop_after, wall0)
    finally:
        dist.close()


class Trainer:
    """One training run: model, optimizer, data, checkpoints and the metrics written at host syncs."""

    def __init__(self, spec, data_dir, ckpt_dir, dist: Dist, progress: bool, track: dict[str, Any] | None):
        self.spec, self.dist, self.progress = spec, dist, progress
        self.name = spec["name"]
        dev = self.dev = dist.device
        sampler, vocab = make_sampler(spec, data_dir)
        torch.manual_seed(spec["seed"])
        self.model, self.tcfg = build_model(spec, vocab)
        tcfg = self.tcfg
        if tcfg.batch_size % dist.world_size:
            raise ConfigError(f"train.batch_size: {tcfg.batch_size} windows cannot be split evenly over "
                              f"{dist.world_size} processes (gpus); use a multiple of {dist.world_size}")
        self.precision = resolve_precision(dev, tcfg.precision)
        self.model.to(dev)
        self.optimizer = make_optimizer(self.model, tcfg, dev)
        self.scaler = grad_scaler(dev, self.precision)
        # every rank reads the newest intact checkpoint (model and optimizer state); only rank 0 writes
        reader = Checkpointer(ckpt_dir, spec)
        self.start, self.train_seconds = reader.load(self.model, self.optimizer, self.scaler)
        self.ckpt = reader if dist.is_main else None
        self.ckpt_dir = Path(ckpt_dir)
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            dist.barrier()
            self.ddp = DDP(self.model, device_ids=[dev.index] if dev.type == "cuda" else None)
        else:
            self.ddp = self.model
        self.step_fn = torch.compile(self.ddp) if tcfg.compile else self.ddp
        self.loader = _Loader(sampler, tcfg, dist, dev)
        self.metrics_path = self.ckpt_dir / "metrics.jsonl"
        if dist.is_main:
            _truncate_metrics(self.metrics_path, self.start)
        if self.start and dist.is_main:
            log.info("%s: resuming from checkpoint at step %d/%d", self.name, self.start, tcfg.steps)
        self.peak = peak_flops(dev)
        self.flops_tok = self.model.flops_per_token(tcfg.seq_len)
        self.last_good = self.start
        self.task = bool(spec.get("task"))
        self.pending: list[tuple] = []  # (step, lr, loss, grad norm, task hits) on device
        self.trackers = self._trackers(track)

    def _trackers(self, track):
        from expe.training.trackers import open_trackers

        names = self.spec["train"].get("trackers") or []
        if not names:
            return open_trackers([], ".", "", "", {})
        track = track or {}
        return open_trackers(names, track.get("dir") or self.ckpt_dir / "tracking", f"{self.name}/s{self.spec['seed']}",
                             track.get("group") or self.name, self.spec, enabled=self.dist.is_main,
                             run_id=f"{self.name}-s{self.spec['seed']}-{self.ckpt_dir.name}", start_step=self.start)

    def run(self, out_dir, stop_after: int | None, wall0: float) -> dict[str, Any]:
        tcfg, dist = self.tcfg, self.dist
        self.bar = tqdm(total=tcfg.steps, initial=self.start, desc=f"train {self.name}", unit="step",
                        disable=not self.progress or not dist.is_main,
                        mininterval=1.0 if sys.stderr.isatty() else 30.0, dynamic_ncols=True)
        self.model.train()
        self.mlog = open(self.metrics_path, "a") if dist.is_main else None
        self.t_sync, self.steps_since = time.perf_counter(), 0
        try:
            with _Preemption() as preempt, self.trackers:
                for step in range(self.start, tcfg.steps):
                    self._step(step)
                    done = step + 1
                    stopping = dist.any(preempt.requested) or (stop_after is not None and done >= stop_after)
                    if done % tcfg.log_every == 0 or done == tcfg.steps or done % tcfg.checkpoint_every == 0 or stopping:
                        self._sync(done)  # also before every checkpoint: a NaN never reaches one
                    if done % tcfg.checkpoint_every == 0 or stopping:
                        if self.ckpt:
                            self.ckpt.save(self.model, self.optimizer, self.scaler, done, self.train_seconds,
                                           kept_step=self.last_good)
                        dist.barrier()
                        self.last_good = done
                    if stopping and (stop_after is None or done < stop_after):
                        if dist.is_main:
                            log.warning("%s: %s received; checkpoint written at step %d, exiting", self.name,
                                        signal.Signals(preempt.signum).name, done)
                        raise Preempted(preempt.signum)
                    if stop_after is not None and done >= stop_after:
                        return {"stopped_at": done}
                if not dist.is_main:
                    dist.barrier()
                    return {"rank": dist.rank}
                summary = finalize(self.model, self.spec, tcfg, out_dir, self.metrics_path, self.train_seconds,
                                   self.precision, dist, time.time() - wall0, self._kept())
                self.trackers.summary({k: summary[k] for k in ("final_train_loss", "train_seconds", "tokens")})
        finally:
            self.bar.close()
            self.loader.close()
            if self.mlog:
                with contextlib.suppress(OSError):  # every line was flushed at its sync; after a failed write
                    self.mlog.close()  # (full disk) the close fails too, and the write's one-line error is reported
        dist.barrier()
        return summary

    def _step(self, step: int) -> None:
        tcfg, dist = self.tcfg, self.dist
        torch.manual_seed(_step_seed(self.spec["seed"], step, dist.rank))
        lr = tcfg.lr_at(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss_sum = torch.zeros((), device=self.dev)
        hits = torch.zeros(2, device=self.dev)  # a task's (correct, scored) on this step's batch, before the update
        for micro in range(tcfg.grad_accum):
            x, y = self.loader(step, micro)
            last = micro == tcfg.grad_accum - 1
            with self.ddp.no_sync() if dist.enabled and not last else contextlib.nullcontext():
                with autocast(self.dev, self.precision):
                    logits, loss = self.step_fn(x, y)
                self.scaler.scale(loss / tcfg.grad_accum).backward()
            loss_sum += loss.detach()
            if self.task:  # fresh samples every step: an in-distribution accuracy curve at no extra forward
                scored = y != IGNORE
                hits += torch.stack([((logits.detach().argmax(-1) == y) & scored).sum(), scored.sum()]).float()
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), tcfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.pending.append((step, lr, loss_sum / tcfg.grad_accum, grad_norm.detach().float(), hits))
        self.steps_since += 1
        self.bar.update(1)

    def _kept(self) -> str:
        """What a failed write leaves to resume from."""
        return f"checkpoint step {self.last_good} is kept" if self.last_good else "no checkpoint yet"

    def _sync(self, done: int) -> None:
        """The one host sync between log steps: losses to the host, NaN check, metrics lines, trackers."""
        tcfg, dist = self.tcfg, self.dist
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)
        now = time.perf_counter()
        dt = now - self.t_sync
        self.train_seconds += dt
        values = torch.stack([torch.stack([l, g]) for _, _, l, g, _ in self.pending]) if self.pending else None
        values = dist.mean(values) if values is not None else None
        rows = values.tolist() if values is not None else []
        hits = dist.mean(torch.stack([h for *_, h in self.pending])).tolist() if self.task and self.pending else None
        tok_s = self.steps_since * tcfg.tokens_per_step / dt if dt > 0 else 0.0
        mfu = self.flops_tok * tok_s / self.peak if self.peak else None
        for i, ((step, lr, *_), (loss_val, gnorm)) in enumerate(zip(self.pending, rows)):
            if not math.isfinite(loss_val):
                kept = (f"last good checkpoint at step {self.last_good} kept in {self.ckpt_dir}"
                        if self.last_good else "no checkpoint yet")
                raise TrainingDiverged(f"model {self.name!r}: loss is {loss_val} at step {step}; {kept}")
            row = {"step": step, "loss": round(loss_val, 6), "lr": lr, "grad_norm": round(gnorm, 4),
                   "tokens": (step + 1) * tcfg.tokens_per_step, "train_seconds": round(self.train_seconds, 4),
                   "wall_time": time.time()}
            if hits is not None:
                row["accuracy"] = round(hits[i][0] / max(hits[i][1], 1.0), 4)  # argmax on the scored targets
            if step == self.pending[-1][0]:  # throughput over the interval since the last sync
                row.update(tokens_per_s=round(tok_s, 1), **({"mfu": round(mfu, 4)} if mfu is not None else {}))
            if self.mlog:
                with guard_write(self.metrics_path, "training metrics", self._kept()):
                    self.mlog.write(json.dumps(row) + "\n")
            self.trackers.log(step, {k: v for k, v in row.items() if k not in ("step", "wall_time")})
        if self.mlog:
            with guard_write(self.metrics_path, "training metrics", self._kept()):
                self.mlog.flush()
        if rows and self.progress:
            post = {"loss": f"{rows[-1][0]:.3f}", "tok/s": f"{tok_s:,.0f}"}
            if mfu is not None:
                post["mfu"] = f"{100 * mfu:.1f}%"
            self.bar.set_postfix(post, refresh=False)
        elif rows and dist.is_main:
            log.info("%s step %d/%d loss %.4f lr %.2e %.0f tok/s%s", self.name, done, tcfg.steps, rows[-1][0],
                     self.pending[-1][1], tok_s, f" MFU {100 * mfu:.1f}%" if mfu is not None else "")
        self.pending.clear()
        self.steps_since = 0
        self.t_sync = time.perf_counter()


def finalize(model: Transformer, spec, tcfg: TrainConfig, out_dir, metrics: Path, train_seconds: float,
             precision: str, dist: Dist, wall_seconds: float, kept: str = "the last checkpoint is kept"):
    from safetensors.torch import save_file

    out = ensure_dir(out_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if model.cfg.tie_embeddings:
        state.pop("lm_head.weight")  # safetensors refuses shared storage; re-tied on load
    kept = f"{kept}; rerun to finish"
    with atomic_path(out / "model.safetensors", what="weights", kept=kept) as tmp:
        save_file(state, str(tmp))
    with atomic_path(out / "metrics.jsonl", what="training metrics", kept=kept) as tmp:
        tmp.write_bytes(metrics.read_bytes())
    losses = [json.loads(ln)["loss"] for ln in metrics.read_text().splitlines()[-max(1, tcfg.log_every):]]
    summary = {
        "name": spec["name"],
        "seed": spec["seed"],
        "model": model.cfg.to_dict(),
        "train": tcfg.to_dict(),
        "precision_resolved": precision,
        "pe_resolved": model.pe.describe(),
        "param_counts": model.param_counts(),
        "flops_per_token": model.flops_per_token(tcfg.seq_len),
        "train_seconds": round(train_seconds, 3),
        "job_wall_seconds": round(wall_seconds, 3),  # of the last job (a resumed run counts from its restart)
        "tokens": tcfg.steps * tcfg.tokens_per_step,
        "final_train_loss": float(np.mean(losses)),
        "weights_sha256": sha256_file(out / "model.safetensors"),
        "torch": torch.__version__,
        "device": str(next(model.parameters()).device),
        "processes": dist.world_size,
    }
    if spec.get("task"):
        summary["task"] = spec["task"]
    write_json(out / "config.json", summary, what="model config", kept=kept)
    return summary
