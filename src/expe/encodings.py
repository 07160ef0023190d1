"""Positional encodings, one registry (METHOD.md).

Every encoding hooks into the decoder at up to four places, all no-ops by default:

    embed(x)          once, on the token embeddings before the first block (sinusoidal, expe_once)
    qk_input(h)       in every block, on the normed input of W_q/W_k (and W_v): ExPE's overwrite
    rotate(q, k)      in every block, after the projections (RoPE)
    attn_bias(T)      in every block, added to the attention scores (ALiBi)

Nothing is precomputed up to a maximum length: every value is a function of the
position computed for the T at hand, so any length runs at inference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn

from .errors import ConfigError


class PositionalEncoding(nn.Module):
    """Base class: no positional signal at all (this *is* NoPE)."""

    # keys that may be changed at evaluation time without touching the weights
    inference_keys: tuple[str, ...] = ()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def qk_input(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (input of W_q and W_k, input of W_v)."""
        return h, h

    def rotate(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return q, k

    def attn_bias(self, T: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor | None:
        """Additive score bias of shape (H, T, T) including the causal mask, or None (plain causal)."""
        return None

    def describe(self) -> dict[str, Any]:
        """The resolved parameters that ran (defaults filled; learned values as trained)."""
        return {}

    def set_inference(self, **kwargs: Any) -> None:
        for key, value in kwargs.items():
            if key not in self.inference_keys:
                allowed = ", ".join(self.inference_keys) or "none"
                raise ConfigError(
                    f"pe.{key}: not an inference-time option of {type(self).__name__} (allowed: {allowed})"
                )
            setattr(self, key, float(value))


class NoPE(PositionalEncoding):
    """No positional signal; the causal mask alone (Haviv et al. 2022)."""


class Sinusoidal(PositionalEncoding):
    """Vaswani et al. 2017: PE[n, 2i] = sin(n / 10000^(2i/d)), PE[n, 2i+1] = cos(...), added once."""

    def __init__(self, d_model: int, base: float = 10000.0):
        super().__init__()
        self.d_model, self.base = d_model, base

    def describe(self):
        return {"base": self.base}

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        T, d = x.shape[1], self.d_model
        n = torch.arange(T, device=x.device, dtype=torch.float32)[:, None]
        inv = self.base ** (-torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)
        pe = torch.zeros(T, d, device=x.device)
        pe[:, 0::2] = torch.sin(n * inv)
        pe[:, 1::2] = torch.cos(n * inv)[:, : d // 2]
        return x + pe.to(x.dtype)


class RoPE(PositionalEncoding):
    """Su et al.: rotate pairs of q/k dims by n * base^(-2i/hd) (rotate-half layout, as in Llama).

    Inference-time extensions (off at 1.0): `interpolation` divides positions by a factor
    (Chen et al. 2023); `ntk_factor` raises the base to base * f^(hd/(hd-2)) (NTK-aware).
    """

    inference_keys = ("interpolation", "ntk_factor")

    def __init__(self, head_dim: int, base: float = 10000.0, interpolation: float = 1.0, ntk_factor: float = 1.0):
        super().__init__()
        if head_dim % 2:
            raise ConfigError(f"pe.name: rope needs an even head size, got {head_dim}")
        self.head_dim, self.base = head_dim, base
        self.interpolation, self.ntk_factor = interpolation, ntk_factor

    def describe(self):
        return {"base": self.base, "interpolation": self.interpolation, "ntk_factor": self.ntk_factor}

    def cos_sin(self, T: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        hd = self.head_dim
        base = self.base * self.ntk_factor ** (hd / (hd - 2))
        inv_freq = base ** (-torch.arange(0, hd, 2, device=device, dtype=torch.float32) / hd)
        n = torch.arange(T, device=device, dtype=torch.float32) / self.interpolation
        angles = torch.outer(n, inv_freq)  # (T, hd/2)
        angles = torch.cat([angles, angles], dim=-1)  # (T, hd)
        return angles.cos(), angles.sin()

    def rotate(self, q, k):
        cos, sin = self.cos_sin(q.shape[-2], q.device)

        def rot(x):
            x1, x2 = x.chunk(2, dim=-1)
            return (x * cos + torch.cat([-x2, x1], dim=-1) * sin).to(x.dtype)

        return rot(q), rot(k)


def alibi_slopes(n_heads: int) -> list[float]:
    """Press et al. 2022: 2^(-8/h), 2^(-16/h), ... ; for h not a power of two, the slopes of the
    nearest lower power of two followed by every other slope of the next higher one."""

    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    if math.log2(n_heads).is_integer():
        return power_of_two(n_heads)
    lower = 2 ** math.floor(math.log2(n_heads))
    return power_of_two(lower) + alibi_slopes(2 * lower)[0::2][: n_heads - lower]


class ALiBi(PositionalEncoding):
    """Bias -m_h * (i - j) on head h's score of query i for key j <= i."""

    def __init__(self, n_head: int):
        super().__init__()
        self.register_buffer("slopes", torch.tensor(alibi_slopes(n_head)), persistent=False)

    def describe(self):
        return {"slopes": [round(x, 6) for x in self.slopes.tolist()]}

    def attn_bias(self, T, device, dtype):
        n = torch.arange(T, device=device)
        dist = (n[:, None] - n[None, :]).float()  # i - j
        bias = -self.slopes.to(device)[:, None, None] * dist
        bias = bias.masked_fill(dist < 0, float("-inf"))  # causal
        return bias.to(dtype)


class ExPE(PositionalEncoding):
    """Exact positional encoding (METHOD.md): in every block the first `l` dims of the
    W_q/W_k input are overwritten by p_n = (S + theta * scale * n) * ones(l).

    `scale` is the inference-time scaling of paper section 4.3 (1.0 in training).
    `learned`: S and theta become trainable ('init' from the fixed values, 'random' from N(0, 1)).
    """

    inference_keys = ("scale",)

    def __init__(
        self,
        d_model: int,
        seq_len: int,
        S: float = 1.0,
        theta: float | None = None,
        l: int | None = None,
        apply_to_value: bool = False,
        scale: float = 1.0,
        learned: str | None = None,
    ):
        super().__init__()
        l = d_model // 8 if l is None else l
        if not 0 < l <= d_model:
            raise ConfigError(f"pe.l: must satisfy 0 < l <= d_model ({d_model}), got {l}")
        self.l, self.apply_to_value, self.scale = l, apply_to_value, scale
        theta = self.default_theta(seq_len, l) if theta is None else theta
        if learned is None:
            self.S, self.theta = float(S), float(theta)
        elif learned == "init":
            self.S, self.theta = nn.Parameter(torch.tensor(float(S))), nn.Parameter(torch.tensor(float(theta)))
        elif learned == "random":
            self.S, self.theta = nn.Parameter(torch.randn(())), nn.Parameter(torch.randn(()))
        else:
            raise ConfigError(f"pe.learned: must be null, 'init' or 'random', got {learned!r}")

    @staticmethod
    def default_theta(seq_len: int, l: int) -> float:
        return 1.0 / seq_len

    def describe(self):
        return {"S": float(self.S), "theta": float(self.theta), "l": self.l, "apply_to_value": self.apply_to_value,
                "scale": self.scale, "learned": isinstance(self.S, nn.Parameter)}

    def values(self, T: int, device: torch.device) -> torch.Tensor:
        """p_n for n = 0..T-1, shape (T, l), float32."""
        n = torch.arange(T, device=device, dtype=torch.float32)
        p = self.S + self.theta * self.scale * n
        return p[:, None].expand(T, self.l)

    def overwrite(self, h: torch.Tensor) -> torch.Tensor:
        B, T, _ = h.shape
        p = self.values(T, h.device).to(h.dtype).expand(B, T, self.l)
        return torch.cat([p, h[..., self.l :]], dim=-1)

    def qk_input(self, h):
        h_pos = self.overwrite(h)
        return h_pos, (h_pos if self.apply_to_value else h)


class ExQPE(ExPE):
    """Quantisation-stable ExPE (METHOD.md reading): a round-robin counter over the l dims,
    p_n[i] = S + theta_q * ceil((n - i) / l), so each step n-1 -> n raises one dim by theta_q."""

    @staticmethod
    def default_theta(seq_len: int, l: int) -> float:
        return l / seq_len  # theta_q: the same total range as ExPE

    def values(self, T, device):
        n = torch.arange(T, device=device)[:, None]
        i = torch.arange(self.l, device=device)[None, :]
        steps = torch.div(n - i + self.l - 1, self.l, rounding_mode="floor").clamp(min=0)  # ceil((n-i)/l)
        return self.S + self.theta * self.scale * steps.float()


class ExPEStable(ExPE):
    """Ablation 'p is stable': the l dims are overwritten with S, carrying no position."""

    def values(self, T, device):
        return (self.S + torch.zeros(T, self.l, device=device)).float()


class ExPEOnce(ExPE):
    """Ablation 'once': p_n written once into the token embeddings, never inside the blocks."""

    def embed(self, x):
        return self.overwrite(x)

    def qk_input(self, h):
        return h, h


@dataclass(frozen=True)
class Entry:
    """A registry entry: how to build the encoding, the config keys it takes, fixed defaults."""

    build: Callable[..., PositionalEncoding]
    keys: tuple[str, ...]
    defaults: dict[str, Any] = field(default_factory=dict)
    doc: str = ""


_EXPE_KEYS = ("S", "theta", "l", "apply_to_value", "scale")


def _expe(cls):
    return lambda m, **kw: cls(m.d_model, m.seq_len, **kw)


REGISTRY: dict[str, Entry] = {
    "nope": Entry(lambda m, **kw: NoPE(), (), doc="no positional signal"),
    "sinusoidal": Entry(lambda m, **kw: Sinusoidal(m.d_model, **kw), ("base",), doc="Vaswani et al. 2017"),
    "rope": Entry(
        lambda m, **kw: RoPE(m.d_model // m.n_head, **kw),
        ("base", "interpolation", "ntk_factor"),
        doc="Su et al.; Llama rows",
    ),
    "alibi": Entry(lambda m, **kw: ALiBi(m.n_head), (), doc="Press et al. 2022"),
    "expe": Entry(_expe(ExPE), _EXPE_KEYS, doc="METHOD.md ExPE"),
    "exqpe": Entry(_expe(ExQPE), _EXPE_KEYS, doc="METHOD.md ExQPE"),
    "expe_p_stable": Entry(_expe(ExPEStable), _EXPE_KEYS, doc="Table 7: p is stable"),
    "expe_l1": Entry(_expe(ExPE), _EXPE_KEYS, {"l": 1}, doc="Table 7: l = 1"),
    "expe_learned_init": Entry(_expe(ExPE), _EXPE_KEYS, {"learned": "init"}, doc="Table 7: learned, initialised"),
    "expe_learned": Entry(_expe(ExPE), _EXPE_KEYS, {"learned": "random"}, doc="Table 7: learned"),
    "expe_once": Entry(_expe(ExPEOnce), _EXPE_KEYS, doc="Table 7: once"),
}


def build_encoding(pe: dict[str, Any], model_cfg: Any) -> PositionalEncoding:
    """Build the encoding named `pe['name']` with the remaining keys of `pe` as its parameters."""
    pe = dict(pe)
    name = pe.pop("name", None)
    if name not in REGISTRY:
        raise ConfigError(f"pe.name: unknown encoding {name!r} (allowed: {', '.join(REGISTRY)})")
    entry = REGISTRY[name]
    for key in pe:
        if key not in entry.keys:
            raise ConfigError(f"pe.{key}: not a parameter of {name} (allowed: {', '.join(entry.keys) or 'none'})")
    return entry.build(model_cfg, **{**entry.defaults, **pe})
