"""Training loop: AdamW, warm-up then cosine/linear decay, accumulation, clipping, checkpoints.

A run is described by a *spec* (see `config.model_spec`): {name, seed, model: {...}, train: {...}}.
Checkpoints live in their own folder (never a Snakemake output) and hold model, optimizer,
step (= data position and schedule position), RNG state and the measured training time, so an
interrupted run resumes exactly where it stopped. SIGTERM (Slurm preemption) writes one first.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from .errors import CheckpointError, ConfigError, ExpeError, TrainingDiverged
from .io import atomic_path, ensure_dir, sha256_file, verify_checksum, write_checksum, write_json
from .model import ModelConfig, Transformer
from .shards import TokenShard, WindowSampler

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
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU | fp32 | bf16
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
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"train.precision: must be 'auto', 'fp32' or 'bf16', got {self.precision!r}")
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


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def autocast(device: torch.device, precision: str):
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if use_bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_optimizer(model: Transformer, tcfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]  # norms, biases, learned S/theta
    groups = [{"params": decay, "weight_decay": tcfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=tcfg.lr, betas=tcfg.betas, fused=device.type == "cuda")


class Checkpointer:
    """`latest.pt` (+ .sha256) in the checkpoint folder, written atomically."""

    def __init__(self, directory: str | Path, spec: dict[str, Any]):
        self.dir = ensure_dir(directory)
        self.path = self.dir / "latest.pt"
        self.spec = spec

    def save(self, model, optimizer, step: int, train_seconds: float) -> None:
        state = {
            "spec_hash": spec_hash(self.spec),
            "step": step,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng_torch": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "train_seconds": train_seconds,
        }
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)
        write_checksum(self.path)

    def load(self, model, optimizer) -> tuple[int, float]:
        """Restore the latest checkpoint; returns (next step, training seconds so far). (0, 0) if none."""
        if not self.path.exists():
            return 0, 0.0
        try:
            verify_checksum(self.path, "checkpoint")
            state = torch.load(self.path, map_location="cpu", weights_only=False)
        except ExpeError:
            raise
        except Exception as e:
            raise CheckpointError(f"checkpoint {self.path} cannot be read: {e}") from None
        if state["spec_hash"] != spec_hash(self.spec):
            raise CheckpointError(
                f"checkpoint {self.path} was written for a different config of model "
                f"{self.spec['name']!r}; delete {self.dir} to start over"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng_torch"])
        if state["rng_cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        return state["step"], state["train_seconds"]


class _Preemption:
    """SIGTERM sets a flag; the loop checkpoints at the end of the current step and exits 143."""

    def __init__(self):
        self.requested = False

    def __enter__(self):
        self._old = signal.signal(signal.SIGTERM, self._handler)
        return self

    def _handler(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        signal.signal(signal.SIGTERM, self._old)


class Preempted(SystemExit):
    def __init__(self):
        super().__init__(143)


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines at or after `step` (written after the checkpoint we resume from)."""
    if not path.exists():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] < step]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(ln + "\n" for ln in keep))


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
    """Train `spec` on `<data_dir>/train.*`; write `model.safetensors`, `config.json`, `metrics.jsonl`."""
    torch.set_num_threads(max(1, threads))
    dev = pick_device(device)
    train_shard = TokenShard(data_dir, "train")
    torch.manual_seed(spec["seed"])
    model, tcfg = build_model(spec, train_shard.vocab_size)
    model.to(dev)
    optimizer = make_optimizer(model, tcfg, dev)
    ckpt = Checkpointer(ckpt_dir, spec)
    start, train_seconds = ckpt.load(model, optimizer)
    sampler = WindowSampler(train_shard, tcfg.seq_len, spec["seed"])
    metrics_path = ckpt.dir / "metrics.jsonl"
    _truncate_metrics(metrics_path, start)
    step_fn = torch.compile(model) if tcfg.compile else model
    name = spec["name"]
    if start:
        log.info("%s: resuming from checkpoint at step %d/%d", name, start, tcfg.steps)
    last_good = start

    bar = tqdm(
        total=tcfg.steps, initial=start, desc=f"train {name}", unit="step", disable=not progress,
        mininterval=1.0 if sys.stderr.isatty() else 30.0, dynamic_ncols=True,
    )
    model.train()
    with _Preemption() as preempt, open(metrics_path, "a") as mlog:
        for step in range(start, tcfg.steps):
            t0 = time.perf_counter()
            lr = tcfg.lr_at(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_sum = 0.0
            for micro in range(tcfg.grad_accum):
                batch = torch.from_numpy(sampler.batch(step, micro, tcfg.batch_size)).to(dev, non_blocking=True)
                with autocast(dev, tcfg.precision):
                    _, loss = step_fn(batch[:, :-1], batch[:, 1:])
                (loss / tcfg.grad_accum).backward()
                loss_sum += loss.item()
            loss_val = loss_sum / tcfg.grad_accum
            if not math.isfinite(loss_val):
                kept = f"last good checkpoint at step {last_good} kept in {ckpt.path}" if last_good else "no checkpoint yet"
                raise TrainingDiverged(f"model {name!r}: loss is {loss_val} at step {step}; {kept}")
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip).item()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            train_seconds += dt
            done = step + 1
            mlog.write(json.dumps({
                "step": step, "loss": round(loss_val, 6), "lr": lr, "grad_norm": round(grad_norm, 4),
                "tokens": done * tcfg.tokens_per_step, "train_seconds": round(train_seconds, 4),
                "wall_time": time.time(),
            }) + "\n")
            bar.update(1)
            if done % tcfg.log_every == 0 or done == tcfg.steps:
                mlog.flush()
                bar.set_postfix(loss=f"{loss_val:.3f}", lr=f"{lr:.1e}", tok_s=f"{tcfg.tokens_per_step / dt:,.0f}")
                if not progress:
                    log.info("%s step %d/%d loss %.4f lr %.2e %.0f tok/s", name, done, tcfg.steps, loss_val, lr,
                             tcfg.tokens_per_step / dt)
            stopping = preempt.requested or (stop_after is not None and done >= stop_after)
            if done % tcfg.checkpoint_every == 0 or stopping:
                mlog.flush()
                ckpt.save(model, optimizer, done, train_seconds)
                last_good = done
            if preempt.requested:
                log.warning("%s: SIGTERM received; checkpoint written at step %d, exiting", name, done)
                bar.close()
                raise Preempted()
            if stop_after is not None and done >= stop_after:
                bar.close()
                return {"stopped_at": done}
    bar.close()
    return finalize(model, spec, tcfg, out_dir, ckpt, train_seconds)


def finalize(model: Transformer, spec, tcfg: TrainConfig, out_dir, ckpt: Checkpointer, train_seconds: float):
    from safetensors.torch import save_file

    out = ensure_dir(out_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if model.cfg.tie_embeddings:
        state.pop("lm_head.weight")  # safetensors refuses shared storage; re-tied on load
    with atomic_path(out / "model.safetensors") as tmp:
        save_file(state, str(tmp))
    metrics = ckpt.dir / "metrics.jsonl"
    with atomic_path(out / "metrics.jsonl") as tmp:
        tmp.write_bytes(metrics.read_bytes())
    losses = [json.loads(ln)["loss"] for ln in metrics.read_text().splitlines()[-max(1, tcfg.log_every):]]
    summary = {
        "name": spec["name"],
        "seed": spec["seed"],
        "model": model.cfg.to_dict(),
        "train": asdict(tcfg),
        "pe_resolved": model.pe.describe(),
        "param_counts": model.param_counts(),
        "train_seconds": round(train_seconds, 3),
        "tokens": tcfg.steps * tcfg.tokens_per_step,
        "final_train_loss": float(np.mean(losses)),
        "weights_sha256": sha256_file(out / "model.safetensors"),
        "torch": torch.__version__,
        "device": str(next(model.parameters()).device),
    }
    write_json(out / "config.json", summary)
    return summary


def load_trained(model_dir: str | Path, device: str = "cpu") -> Transformer:
    """Load `model.safetensors` + `config.json`; a mismatch between them is a one-line error."""
    from safetensors.torch import load_file

    model_dir = Path(model_dir)
    cfg_path, w_path = model_dir / "config.json", model_dir / "model.safetensors"
    if not cfg_path.exists() or not w_path.exists():
        raise CheckpointError(f"{model_dir}: needs config.json and model.safetensors (train the model first)")
    cfg = json.loads(cfg_path.read_text())
    if sha256_file(w_path) != cfg.get("weights_sha256"):
        raise CheckpointError(f"weights {w_path} are corrupt or truncated (checksum mismatch with config.json)")
    model = Transformer(ModelConfig(**cfg["model"]))
    state = load_file(str(w_path))
    if model.cfg.tie_embeddings:
        state["lm_head.weight"] = state["tok_emb.weight"]
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise CheckpointError(f"weights {w_path} do not match config.json: {first}") from None
    return model.to(device).eval()
