"""Training hyper-parameters as a dataclass whose fields and defaults are the config schema's `train`
section (the one source; see `expe.config.schema`), plus the learning-rate schedule."""

from __future__ import annotations

import math
from dataclasses import asdict, field, make_dataclass
from typing import Any

from expe.config.schema import section_defaults


def _fields() -> list[tuple[str, type, Any]]:
    return [(k, Any, field(default_factory=lambda v=v: v)) for k, v in section_defaults("train").items()]


class _Schedule:
    """Methods of TrainConfig; its fields come from the schema."""

    steps: int
    lr: float
    end_lr: float
    warmup_ratio: float
    schedule: str
    batch_size: int
    grad_accum: int
    seq_len: int

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.grad_accum * self.seq_len

    def lr_at(self, step: int) -> float:
        """Linear warm-up to `lr`, then cosine or linear decay to `end_lr` at the last step."""
        warmup = int(self.warmup_ratio * self.steps)
        if step < warmup:  # 1) warm-up: linear from lr/warmup to lr
            return self.lr * (step + 1) / warmup
        frac = min((step - warmup) / max(1, self.steps - 1 - warmup), 1.0)  # 2) decay: 0 -> 1 over the rest
        shape = 0.5 * (1 + math.cos(math.pi * frac)) if self.schedule == "cosine" else 1 - frac
        return self.end_lr + (self.lr - self.end_lr) * shape  # 3) ends exactly at end_lr

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


TrainConfig = make_dataclass("TrainConfig", _fields(), bases=(_Schedule,))
TrainConfig.__doc__ = "The `train` section of a spec (fields and defaults: the schema's `train`)."
