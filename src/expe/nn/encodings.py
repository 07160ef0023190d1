"""Positional encodings, one registry (METHOD.md).

Every encoding hooks into the decoder at up to five places, all no-ops by default:

    context(T, ...)        once per forward: what the blocks share (RoPE cos/sin, ALiBi bias, ExPE p_n)
    embed(x, ctx)          once, on the token embeddings before the embedding dropout (sinusoidal)
    after_dropout(x, ctx)  once, after the embedding dropout (expe_once: positions stay exact)
    qk_input(h, ctx)       in every block, on the normed input of W_q/W_k (and W_v): ExPE's overwrite
    rotate(q, k, ctx)      in every block, after the projections (RoPE)
    attn_bias(ctx)         in every block, added to the attention scores (ALiBi)
    attention(q, k, v, ctx) in every block, replaces the attention itself (RoPE's Dual Chunk Attention)

Nothing is precomputed up to a maximum length: every value is a function of the
position computed for the T at hand, so any length runs at inference. What the blocks
share is computed once per forward (never once per layer).

Names, config keys and inference-time keys live in the torch-free registry (`expe.nn.registry`); a
class here is built by `from_config(model_config, **keys)` and trusts values validated by the config.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn

from expe.errors import ConfigError


class PositionalEncoding(nn.Module):
    """Base class: no positional signal at all (this *is* NoPE)."""

    @classmethod
    def from_config(cls, cfg: Any, **keys: Any) -> "PositionalEncoding":
        """Build from the model config (d_model, n_head, seq_len) and the entry's validated keys."""
        return cls(**keys)

    def context(self, T: int, device: torch.device, dtype: torch.dtype) -> Any:
        """What every block needs for a sequence of T tokens, computed once per forward."""
        return None

    def embed(self, x: torch.Tensor, ctx: Any = None) -> torch.Tensor:
        return x

    def after_dropout(self, x: torch.Tensor, ctx: Any = None) -> torch.Tensor:
        return x

    def qk_input(self, h: torch.Tensor, ctx: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (input of W_q and W_k, input of W_v)."""
        return h, h

    def rotate(self, q: torch.Tensor, k: torch.Tensor, ctx: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        return q, k

    def attn_bias(self, ctx: Any = None) -> torch.Tensor | None:
        """Additive score bias of shape (1, H, T, T) including the causal mask, or None (plain causal,
        which lets SDPA pick FlashAttention)."""
        return None

    def position_values(self, T: int) -> torch.Tensor | None:
        """The values that carry position n = 0..T-1 into the model, one row per position (for the
        distinct-values count of the precision study); None where position is not a value (NoPE, ALiBi)."""
        return None

    def describe(self) -> dict[str, Any]:
        """The resolved parameters that ran (defaults filled; learned values as trained)."""
        return {}

    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ctx: Any = None) -> torch.Tensor | None:
        """The attention output (B, H, T, hd) from unrotated q, k, v, or None for the standard causal
        attention (after `rotate` and with `attn_bias`)."""
        return None

    def set_inference(self, **options: Any) -> None:
        """Inference-time options (ExPE's scale, RoPE's interpolation, ...), checked by the registry's
        schema where they were read (config, --pe, lm-eval model_args)."""
        for key, value in options.items():
            setattr(self, key, value)


class NoPE(PositionalEncoding):
    """No positional signal; the causal mask alone (Haviv et al. 2022)."""


class Sinusoidal(PositionalEncoding):
    """Vaswani et al. 2017: PE[n, 2i] = sin(n / 10000^(2i/d)), PE[n, 2i+1] = cos(...), added once.

    `scale_embeddings`: the token embeddings are multiplied by sqrt(d) first, as in the original
    Transformer (Section 3.4): with embeddings of std 0.02 and a table of values in [-1, 1], position
    would otherwise outweigh content about 35 to 1 at d = 64 (our choice; the unscaled variant is an
    ablation row)."""

    @classmethod
    def from_config(cls, cfg, **keys):
        return cls(cfg.d_model, **keys)

    def __init__(self, d_model: int, base: float = 10000.0, scale_embeddings: bool = True):
        super().__init__()
        self.d_model, self.base, self.scale_embeddings = d_model, base, scale_embeddings

    def describe(self):
        return {"base": self.base, "scale_embeddings": self.scale_embeddings}

    def table(self, T: int, device: torch.device) -> torch.Tensor:
        d = self.d_model
        n = torch.arange(T, device=device, dtype=torch.float32)[:, None]
        inv = self.base ** (-torch.arange(0, d, 2, device=device, dtype=torch.float32) / d)
        pe = torch.zeros(T, d, device=device)
        pe[:, 0::2] = torch.sin(n * inv)
        pe[:, 1::2] = torch.cos(n * inv)[:, : d // 2]
        return pe

    def embed(self, x, ctx=None):
        if self.scale_embeddings:
            x = x * math.sqrt(self.d_model)
        return x + self.table(x.shape[1], x.device).to(x.dtype)

    def position_values(self, T):
        return self.table(T, torch.device("cpu"))


class RoPE(PositionalEncoding):
    """Su et al.: rotate pairs of q/k dims by n * base^(-2i/hd) (rotate-half layout, as in Llama).

    Inference-time extensions (all off at 1.0), the RoPE counterparts of ExPE's scaling:
    `interpolation` divides positions by a factor (position interpolation, Chen et al. 2023);
    `ntk_factor` raises the base to base * f^(hd/(hd-2)) (NTK-aware scaling);
    `yarn_factor` s applies YaRN (Peng et al. 2023): frequencies that turn fewer than beta_slow = 1
    times within the training length are interpolated by s, those that turn more than
    beta_fast = 32 times are kept, a linear ramp in between, and the attention logits are scaled
    by (0.1 ln s + 1)^2 (its temperature, applied to cos and sin as in the reference code).
    `dca_chunk` c turns on Dual Chunk Attention (An et al. 2024, `expe.nn.dca`): query-key distances are
    remapped chunk-wise so that none leaves [0, c); c <= L keeps every distance inside training's range.
    """

    @classmethod
    def from_config(cls, cfg, **keys):
        return cls(cfg.d_model // cfg.n_head, cfg.seq_len, **keys)

    def __init__(self, head_dim: int, seq_len: int = 512, base: float = 10000.0, interpolation: float = 1.0,
                 ntk_factor: float = 1.0, yarn_factor: float = 1.0, yarn_beta_fast: float = 32.0,
                 yarn_beta_slow: float = 1.0, dca_chunk: int | None = None, dca_window: int | None = None):
        super().__init__()
        self.head_dim, self.seq_len, self.base = head_dim, seq_len, base
        self.interpolation, self.ntk_factor, self.yarn_factor = interpolation, ntk_factor, yarn_factor
        self.yarn_beta_fast, self.yarn_beta_slow = yarn_beta_fast, yarn_beta_slow
        self.dca_chunk, self.dca_window = dca_chunk, dca_window

    def describe(self):
        return {"base": self.base, "interpolation": self.interpolation, "ntk_factor": self.ntk_factor,
                "yarn_factor": self.yarn_factor, "dca_chunk": self.dca_chunk, "dca_window": self.dca_window}

    def inv_freq(self, device: torch.device) -> torch.Tensor:
        hd = self.head_dim
        base = self.base * self.ntk_factor ** (hd / (hd - 2))
        inv = base ** (-torch.arange(0, hd, 2, device=device, dtype=torch.float32) / hd)
        s = self.yarn_factor
        if s != 1.0:
            # dimension index at which a frequency turns `rot` times within the training length
            def dim_at(rot: float) -> float:
                return hd * math.log(self.seq_len / (rot * 2 * math.pi)) / (2 * math.log(base))

            low = max(math.floor(dim_at(self.yarn_beta_fast)), 0)
            high = min(math.ceil(dim_at(self.yarn_beta_slow)), hd // 2 - 1)
            i = torch.arange(hd // 2, device=device, dtype=torch.float32)
            ramp = ((i - low) / max(high - low, 1e-3)).clamp(0, 1)  # 0: keep (fast dims), 1: interpolate
            inv = inv * (1 - ramp) + (inv / s) * ramp
        return inv

    def cos_sin(self, T: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        n = torch.arange(T, device=device, dtype=torch.float32) / self.interpolation
        angles = torch.outer(n, self.inv_freq(device))  # (T, hd/2)
        angles = torch.cat([angles, angles], dim=-1)  # (T, hd)
        m = 0.1 * math.log(self.yarn_factor) + 1.0 if self.yarn_factor > 1 else 1.0  # YaRN temperature
        return angles.cos() * m, angles.sin() * m

    def context(self, T, device, dtype):
        if self.dca_chunk:
            return None  # DCA rotates per chunk component itself
        cos, sin = self.cos_sin(T, device)
        h = self.head_dim // 2
        return cos, torch.cat([-sin[:, :h], sin[:, h:]], dim=-1)  # sin with rotate-half's signs folded in

    def attention(self, q, k, v, ctx=None):
        if not self.dca_chunk:
            return None
        from expe.nn.dca import dca_attention

        temp = 0.1 * math.log(self.yarn_factor) + 1.0 if self.yarn_factor > 1 else 1.0
        return dca_attention(q, k, v, self.inv_freq(q.device) / self.interpolation, self.dca_chunk, self.dca_window,
                             scale_cos_sin=temp)

    def rotate(self, q, k, ctx=None):
        cos, sin_signed = ctx if ctx is not None else self.context(q.shape[-2], q.device, q.dtype)
        h = self.head_dim // 2

        def rot(x):  # x * cos + rotate_half(x) * sin, with rotate_half(x) = cat(-x2, x1) = roll(x) * signs
            return torch.addcmul(x * cos, x.roll(h, dims=-1), sin_signed).to(x.dtype)

        return rot(q), rot(k)

    def position_values(self, T):
        cos, sin = self.cos_sin(T, torch.device("cpu"))
        return torch.cat([cos, sin], dim=-1)


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
    """Bias -m_h * (i - j) on head h's score of query i for key j <= i.

    Built once per forward as one (1, H, T, T) tensor shared by every block: 4-D, so SDPA keeps a
    fused kernel (flash on CPU, memory-efficient on CUDA) instead of its math path."""

    @classmethod
    def from_config(cls, cfg, **keys):
        return cls(cfg.n_head, **keys)

    def __init__(self, n_head: int):
        super().__init__()
        self.register_buffer("slopes", torch.tensor(alibi_slopes(n_head)), persistent=False)

    def describe(self):
        return {"slopes": [round(x, 6) for x in self.slopes.tolist()]}

    def context(self, T, device, dtype):
        key = (T, str(device), dtype)
        cached = getattr(self, "_bias_cache", None)
        if cached is not None and cached[0] == key and not torch.is_grad_enabled():  # evaluation: one build per length
            return cached[1]
        n = torch.arange(T, device=device, dtype=torch.float32)
        rel = n[None, :] - n[:, None]  # j - i: <= 0 for the keys a query may see
        rel.masked_fill_(rel > 0, float("-inf"))  # causal
        bias = (rel[None] * self.slopes.to(device)[:, None, None]).to(dtype).unsqueeze(0)  # (1, H, T, T)
        if not torch.is_grad_enabled():  # never cache a tensor of an autograd graph (a learned bias would break)
            self._bias_cache = (key, bias)  # one entry, not a buffer (never saved); replaced at another length
        return bias

    def attn_bias(self, ctx=None):
        return ctx

    def position_values(self, T):
        """The bias of each distance 0 .. T-1, one column per head (what tells distances apart)."""
        return -torch.arange(T, dtype=torch.float32)[:, None] * self.slopes.cpu()[None, :]


class ExPE(PositionalEncoding):
    """Exact positional encoding (METHOD.md): in every block the first `l` dims of the
    W_q/W_k input are overwritten by p_n = (S + theta * scale * n) * ones(l).

    `scale` is the inference-time scaling of paper section 4.3 (1.0 in training).
    `learned`: S and theta become trainable ('init' from the fixed values, 'random' from N(0, 1)).
    """

    @classmethod
    def from_config(cls, cfg, **keys):
        return cls(cfg.d_model, cfg.seq_len, **keys)

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
        return {"S": float(torch.as_tensor(self.S).detach()), "theta": float(torch.as_tensor(self.theta).detach()),
                "l": self.l, "apply_to_value": self.apply_to_value,
                "scale": self.scale, "learned": isinstance(self.S, nn.Parameter)}

    def values(self, T: int, device: torch.device) -> torch.Tensor:
        """p_n for n = 0..T-1, shape (T, l), float32."""
        n = torch.arange(T, device=device, dtype=torch.float32)
        p = self.S + self.theta * self.scale * n
        return p[:, None].expand(T, self.l)

    def context(self, T, device, dtype):
        return self.values(T, device)  # float32; cast to the activations' dtype where written

    def overwrite(self, h: torch.Tensor, p: torch.Tensor | None = None) -> torch.Tensor:
        B, T, _ = h.shape
        p = self.values(T, h.device) if p is None else p
        return torch.cat([p.to(h.dtype).expand(B, T, self.l), h[..., self.l :]], dim=-1)

    def qk_input(self, h, ctx=None):
        h_pos = self.overwrite(h, ctx)
        return h_pos, (h_pos if self.apply_to_value else h)

    def position_values(self, T):
        with torch.no_grad():
            return self.values(T, torch.device("cpu")).detach()


class ExQPE(ExPE):
    """Quantisation-stable ExPE (METHOD.md reading): a round-robin counter over the l dims,
    p_n[i] = S_q + theta_q * ceil((n - i) / l), so each step n-1 -> n raises one dim by theta_q.
    S_q and theta_q are ExQPE's own keys (the paper's Table 9 has two ExQPE-only rows whose symbols
    were lost; this is our reading). Stored as `S` and `theta`, as ExPE's."""

    def __init__(self, d_model: int, seq_len: int, S_q: float = 1.0, theta_q: float | None = None,
                 l: int | None = None, apply_to_value: bool = False, scale: float = 1.0, learned: str | None = None):
        super().__init__(d_model, seq_len, S_q, theta_q, l, apply_to_value, scale, learned)

    def describe(self):
        d = super().describe()
        return {"S_q": d.pop("S"), "theta_q": d.pop("theta"), **d}

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
    """Ablation 'once': p_n written once into the token embeddings, never inside the blocks.
    Written after the embedding dropout, so the positions are exact in training as in evaluation
    (the one difference from ExPE is where p_n is written)."""

    def after_dropout(self, x, ctx=None):
        return self.overwrite(x, ctx)

    def qk_input(self, h, ctx=None):
        return h, h


def build_encoding(pe: dict[str, Any], model_cfg: Any) -> PositionalEncoding:
    """Build the encoding named `pe['name']` (expe.nn.registry) with the rest of `pe` as its keys."""
    from expe.nn.registry import entry

    pe = dict(pe)
    e = entry(pe.pop("name", None))
    return e.cls().from_config(model_cfg, **{**e.defaults, **pe})
