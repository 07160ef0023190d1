"""Training loop: AdamW, warm-up then cosine/linear decay, accumulation, clipping, checkpoints,
and data-parallel training under torchrun (see `dist.py`).

A run is described by a *spec* (see `config.model_spec`): {name, seed, model: {...}, train: {...}}.
Checkpoints live in their own folder (never a Snakemake output) and hold model, optimizer, scaler
and step (= data position and schedule position); dropout is seeded from (seed, step, rank), so an
interrupted run resumes exactly where it stopped. SIGTERM (Slurm preemption) writes one first.

With N processes (DDP), every micro-batch of `batch_size` windows is split row-wise over the ranks
and gradients are averaged: the global batch, schedule and data order are those of one process.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from expe.training.dist import Dist, setup
from expe.errors import CheckpointError, ConfigError, DataError, ExpeError, TrainingDiverged
from expe.io import atomic_path, ensure_dir, sha256_file, write_checksum, write_json
from expe.nn.model import ModelConfig, Transformer
from expe.runtime import autocast, grad_scaler, load_trained, peak_flops, resolve_device, resolve_precision  # noqa: F401
from expe.data.shards import TokenShard, WindowSampler

log = logging.getLogger("expe.train")


@dataclass
class TrainConfig:
    seq_len: int = 512
    batch_size: int = 32  # windows per micro-batch
    grad_accum: int = 1
    steps: int = 1000  # optimizer steps
    lr: float = 6e-4  # peak
    end_lr: float = 6e-5
    schedule: str = "cosine"  # cosine | linear
    warmup_ratio: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU | fp32 | bf16 | fp16 (gradient scaler)
    compile: bool = False
    checkpoint_every: int = 200
    log_every: int = 10

    def __post_init__(self):
        for key in ("seq_len", "batch_size", "grad_accum", "steps", "checkpoint_every", "log_every"):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ConfigError(f"train.{key}: must be a positive integer, got {v!r}")
        if self.schedule not in ("cosine", "linear"):
            raise ConfigError(f"train.schedule: must be 'cosine' or 'linear', got {self.schedule!r}")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ConfigError(f"train.precision: must be 'auto', 'fp32', 'bf16' or 'fp16', got {self.precision!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"train.warmup_ratio: must be in [0, 1), got {self.warmup_ratio}")
        if self.lr <= 0 or self.end_lr < 0:
            raise ConfigError(f"train.lr/end_lr: must be positive, got {self.lr}/{self.end_lr}")
        self.betas = tuple(self.betas)

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.grad_accum * self.seq_len

    def lr_at(self, step: int) -> float:
        """Linear warm-up to `lr`, then cosine or linear decay to `end_lr` at the last step."""
        warmup = int(self.warmup_ratio * self.steps)
        if step < warmup:
            return self.lr * (step + 1) / warmup
        frac = (step - warmup) / max(1, self.steps - 1 - warmup)
        frac = min(frac, 1.0)
        shape = 0.5 * (1 + math.cos(math.pi * frac)) if self.schedule == "cosine" else 1 - frac
        return self.end_lr + (self.lr - self.end_lr) * shape


def spec_hash(spec: dict[str, Any]) -> str:
    """Hash of what determines the trained weights (checkpoints of another spec are refused)."""
    keep = {k: spec[k] for k in ("seed", "model", "train")}
    return json.dumps(keep, sort_keys=True)


def build_model(spec: dict[str, Any], vocab_size: int) -> tuple[Transformer, TrainConfig]:
    tcfg = TrainConfig(**spec["train"])
    mcfg = ModelConfig(**{**spec["model"], "vocab_size": vocab_size, "seq_len": tcfg.seq_len})
    return Transformer(mcfg), tcfg


def make_optimizer(model: Transformer, tcfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]  # norms, biases, learned S/theta
    groups = [{"params": decay, "weight_decay": tcfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=tcfg.lr, betas=tcfg.betas, fused=device.type == "cuda")


class Checkpointer:
    """`step-XXXXXXXX.pt`, each with a `.sha256` written after it is complete; the newest that
    verifies is the one resumed from, and the previous one is deleted only after a newer one is
    complete. A kill at any instant of a write therefore leaves a resumable run: either the new
    checkpoint (complete with its checksum) or the previous one."""

    def __init__(self, directory: str | Path, spec: dict[str, Any]):
        self.dir = ensure_dir(directory)
        self.spec = spec

    def files(self) -> list[Path]:
        return sorted(self.dir.glob("step-*.pt"), reverse=True)  # newest first (zero-padded step)

    @property
    def path(self) -> Path | None:
        f = self.files()
        return f[0] if f else None

    def save(self, model, optimizer, scaler, step: int, train_seconds: float) -> Path:
        state = {
            "spec_hash": spec_hash(self.spec),
            "step": step,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "train_seconds": train_seconds,
        }
        path = self.dir / f"step-{step:08d}.pt"
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
        write_checksum(path)  # a checkpoint counts only once this exists
        for old in self.files():
            if old != path:
                Path(f"{old}.sha256").unlink(missing_ok=True)  # checksum first: never a checksum without its file
                old.unlink(missing_ok=True)
        return path

    def _verified(self, path: Path) -> bool | None:
        """True: intact; False: checksum mismatch (corrupt); None: no checksum (its write never finished)."""
        side = Path(f"{path}.sha256")
        if not side.exists():
            return None
        try:
            expected = side.read_text().split()[0]
        except (IndexError, OSError, UnicodeDecodeError):
            return None  # the checksum file itself was being written
        return sha256_file(path) == expected

    def load(self, model, optimizer, scaler) -> tuple[int, float]:
        """Restore the newest intact checkpoint; returns (next step, training seconds so far); (0, 0) if none."""
        corrupt = []
        for path in self.files():
            ok = self._verified(path)
            if ok is None:
                log.warning("%s: ignoring %s (its write did not finish)", self.spec["name"], path.name)
                continue
            if ok is False:
                corrupt.append(path)
                log.warning("%s: %s is corrupt (checksum mismatch); trying an older checkpoint", self.spec["name"], path)
                continue
            try:
                state = torch.load(path, map_location="cpu", weights_only=False)
            except Exception as e:
                raise CheckpointError(f"checkpoint {path} cannot be read: {e}") from None
            if state["spec_hash"] != spec_hash(self.spec):
                raise CheckpointError(
                    f"checkpoint {path} was written for a different config of model "
                    f"{self.spec['name']!r}; delete {self.dir} to start over"
                )
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            if state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            return state["step"], state["train_seconds"]
        if corrupt:
            raise DataError(f"checkpoint {corrupt[0]} is corrupt or truncated (checksum mismatch) and no older "
                            f"intact checkpoint exists; delete {self.dir} to start over")
        return 0, 0.0


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
    with atomic_path(path) as tmp:
        tmp.write_text("".join(ln + "\n" for ln in keep))


def _step_seed(seed: int, step: int, rank: int) -> int:
    """Dropout's RNG seed for one step on one rank: resuming needs no saved RNG state."""
    return (seed * 1_000_003 + step * 1009 + rank) % (2**63)


class _Loader:
    """The next micro-batch is read (and, on CUDA, pinned) in a background thread while the
    current one computes; the copy to the GPU is asynchronous."""

    def __init__(self, sampler: WindowSampler, tcfg: TrainConfig, dist: Dist, device: torch.device):
        self.sampler, self.tcfg, self.dist, self.device = sampler, tcfg, dist, device
        self.rows = tcfg.batch_size // dist.world_size
        self.pool = ThreadPoolExecutor(1)
        self.pending = None

    def _read(self, step: int, micro: int) -> torch.Tensor:
        full = self.sampler.batch(step, micro, self.tcfg.batch_size)  # the one-process batch ...
        mine = full[self.dist.rank * self.rows : (self.dist.rank + 1) * self.rows]  # ... this rank's rows
        t = torch.from_numpy(np.ascontiguousarray(mine))
        return t.pin_memory() if self.device.type == "cuda" else t

    def __call__(self, step: int, micro: int) -> torch.Tensor:
        key = (step, micro)
        if self.pending is not None and self.pending[0] == key:
            batch = self.pending[1].result()
        else:
            batch = self._read(step, micro)
        nxt = (step, micro + 1) if micro + 1 < self.tcfg.grad_accum else (step + 1, 0)
        if nxt[0] < self.tcfg.steps:
            self.pending = (nxt, self.pool.submit(self._read, *nxt))
        return batch.to(self.device, non_blocking=True)

    def close(self):
        self.pool.shutdown(wait=False, cancel_futures=True)


def train(
    spec: dict[str, Any],
    data_dir: str | Path,
    out_dir: str | Path,
    ckpt_dir: str | Path,
    threads: int = 1,
    device: str = "auto",
    stop_after: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train `spec` on `<data_dir>/train.*`; write `model.safetensors`, `config.json`, `metrics.jsonl`.

    Under torchrun every rank calls this; rank 0 writes checkpoints, metrics and the final files."""
    torch.set_num_threads(max(1, threads))
    wall0 = time.time()
    dist = setup(device)
    try:
        return _train(spec, data_dir, out_dir, ckpt_dir, dist, stop_after, progress, wall0)
    finally:
        dist.close()


def _train(spec, data_dir, out_dir, ckpt_dir, dist: Dist, stop_after, progress, wall0) -> dict[str, Any]:
    dev = dist.device
    train_shard = TokenShard(data_dir, "train")
    torch.manual_seed(spec["seed"])
    model, tcfg = build_model(spec, train_shard.vocab_size)
    if tcfg.batch_size % dist.world_size:
        raise ConfigError(f"train.batch_size: {tcfg.batch_size} windows cannot be split evenly over "
                          f"{dist.world_size} processes (gpus); use a multiple of {dist.world_size}")
    precision = resolve_precision(dev, tcfg.precision)
    model.to(dev)
    optimizer = make_optimizer(model, tcfg, dev)
    scaler = grad_scaler(dev, precision)
    # every rank reads the newest intact checkpoint (model and optimizer state); only rank 0 writes
    reader = Checkpointer(ckpt_dir, spec)
    start, train_seconds = reader.load(model, optimizer, scaler)
    ckpt = reader if dist.is_main else None
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        dist.barrier()
        ddp = DDP(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    else:
        ddp = model
    step_fn = torch.compile(ddp) if tcfg.compile else ddp
    sampler = WindowSampler(train_shard, tcfg.seq_len, spec["seed"])
    loader = _Loader(sampler, tcfg, dist, dev)
    metrics_path = Path(ckpt_dir) / "metrics.jsonl"
    if dist.is_main:
        _truncate_metrics(metrics_path, start)
    name = spec["name"]
    if start and dist.is_main:
        log.info("%s: resuming from checkpoint at step %d/%d", name, start, tcfg.steps)
    peak = peak_flops(dev)
    flops_tok = model.flops_per_token(tcfg.seq_len)
    last_good = start
    pending: list[tuple[int, float, torch.Tensor, torch.Tensor]] = []  # (step, lr, loss, grad norm) on device

    bar = tqdm(
        total=tcfg.steps, initial=start, desc=f"train {name}", unit="step", disable=not progress or not dist.is_main,
        mininterval=1.0 if sys.stderr.isatty() else 30.0, dynamic_ncols=True,
    )
    model.train()
    mlog = open(metrics_path, "a") if dist.is_main else None
    t_sync, steps_since = time.perf_counter(), 0

    def sync(done: int) -> None:
        """The one host sync between log steps: losses to the host, NaN check, metrics lines."""
        nonlocal t_sync, steps_since, train_seconds, last_good
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        now = time.perf_counter()
        dt = now - t_sync
        train_seconds += dt
        values = torch.stack([torch.stack([l, g]) for _, _, l, g in pending]) if pending else None
        values = dist.mean(values) if values is not None else None
        rows = values.tolist() if values is not None else []
        tok_s = steps_since * tcfg.tokens_per_step / dt if dt > 0 else 0.0
        mfu = flops_tok * tok_s / peak if peak else None
        for (step, lr, _, _), (loss_val, gnorm) in zip(pending, rows):
            if not math.isfinite(loss_val):
                kept = (f"last good checkpoint at step {last_good} kept in {ckpt.dir if ckpt else ckpt_dir}"
                        if last_good else "no checkpoint yet")
                raise TrainingDiverged(f"model {name!r}: loss is {loss_val} at step {step}; {kept}")
            if mlog:
                row = {"step": step, "loss": round(loss_val, 6), "lr": lr, "grad_norm": round(gnorm, 4),
                       "tokens": (step + 1) * tcfg.tokens_per_step, "train_seconds": round(train_seconds, 4),
                       "wall_time": time.time()}
                if step == pending[-1][0]:  # throughput over the interval since the last sync
                    row.update(tokens_per_s=round(tok_s, 1), **({"mfu": round(mfu, 4)} if mfu is not None else {}))
                mlog.write(json.dumps(row) + "\n")
        if mlog:
            mlog.flush()
        if rows and progress:
            post = {"loss": f"{rows[-1][0]:.3f}", "tok/s": f"{tok_s:,.0f}"}
            if mfu is not None:
                post["mfu"] = f"{100 * mfu:.1f}%"
            bar.set_postfix(post, refresh=False)
        elif rows and dist.is_main:
            log.info("%s step %d/%d loss %.4f lr %.2e %.0f tok/s%s", name, done, tcfg.steps, rows[-1][0],
                     pending[-1][1], tok_s, f" MFU {100 * mfu:.1f}%" if mfu is not None else "")
        pending.clear()
        steps_since = 0
        t_sync = time.perf_counter()

    try:
        with _Preemption() as preempt:
            for step in range(start, tcfg.steps):
                torch.manual_seed(_step_seed(spec["seed"], step, dist.rank))
                lr = tcfg.lr_at(step)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss_sum = torch.zeros((), device=dev)
                for micro in range(tcfg.grad_accum):
                    batch = loader(step, micro)
                    last = micro == tcfg.grad_accum - 1
                    ctx = ddp.no_sync() if dist.enabled and not last else _null()
                    with ctx:
                        with autocast(dev, precision):
                            _, loss = step_fn(batch[:, :-1], batch[:, 1:])
                        scaler.scale(loss / tcfg.grad_accum).backward()
                    loss_sum += loss.detach()
                scaler.unscale_(optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                pending.append((step, lr, loss_sum / tcfg.grad_accum, grad_norm.detach().float()))
                steps_since += 1
                done = step + 1
                bar.update(1)
                stopping = dist.any(preempt.requested) or (stop_after is not None and done >= stop_after)
                if done % tcfg.log_every == 0 or done == tcfg.steps or done % tcfg.checkpoint_every == 0 or stopping:
                    sync(done)  # also before every checkpoint: a NaN never reaches one
                if done % tcfg.checkpoint_every == 0 or stopping:
                    if ckpt:
                        ckpt.save(model, optimizer, scaler, done, train_seconds)
                    dist.barrier()
                    last_good = done
                if stopping and (stop_after is None or done < stop_after):
                    if dist.is_main:
                        log.warning("%s: %s received; checkpoint written at step %d, exiting", name,
                                    signal.Signals(preempt.signum).name, done)
                    raise Preempted(preempt.signum)
                if stop_after is not None and done >= stop_after:
                    return {"stopped_at": done}
    finally:
        bar.close()
        loader.close()
        if mlog:
            mlog.close()
    if not dist.is_main:
        dist.barrier()
        return {"rank": dist.rank}
    summary = finalize(model, spec, tcfg, out_dir, metrics_path, train_seconds, precision, dist, time.time() - wall0)
    dist.barrier()
    return summary


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def finalize(model: Transformer, spec, tcfg: TrainConfig, out_dir, metrics: Path, train_seconds: float,
             precision: str, dist: Dist, wall_seconds: float):
    from safetensors.torch import save_file

    out = ensure_dir(out_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if model.cfg.tie_embeddings:
        state.pop("lm_head.weight")  # safetensors refuses shared storage; re-tied on load
    with atomic_path(out / "model.safetensors") as tmp:
        save_file(state, str(tmp))
    with atomic_path(out / "metrics.jsonl") as tmp:
        tmp.write_bytes(metrics.read_bytes())
    losses = [json.loads(ln)["loss"] for ln in metrics.read_text().splitlines()[-max(1, tcfg.log_every):]]
    summary = {
        "name": spec["name"],
        "seed": spec["seed"],
        "model": model.cfg.to_dict(),
        "train": asdict(tcfg),
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
    write_json(out / "config.json", summary)
    return summary
