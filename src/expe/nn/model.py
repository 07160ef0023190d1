"""Decoder-only transformers: the Section 4.1 GPT-style model and the Section 4.2 Llama-style one.

One file, nanoGPT-style. The positional encoding is a module built from `expe.nn.registry`, shared
by all blocks (so a learned S/theta is two parameters, not two per block). The architecture presets
are in `expe.nn.presets`; values come validated from the config, so nothing here re-checks them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from expe.nn.encodings import PositionalEncoding, build_encoding
from expe.errors import ConfigError
from expe.nn.presets import PRESETS


@dataclass
class ModelConfig:
    vocab_size: int = 32000
    seq_len: int = 512  # training length L (ExPE's theta defaults to 1/L)
    d_model: int = 384
    n_layer: int = 6
    n_head: int = 12
    arch: str = "gpt"  # gpt: LayerNorm + GELU MLP + biases; llama: RMSNorm + SwiGLU, no biases
    dropout: float = 0.1
    tie_embeddings: bool = False
    ffn_hidden: int | None = None  # None: 4d (gpt) or 8d/3 rounded up to 256 (llama)
    norm_eps: float = 1e-5
    pe: dict[str, Any] = field(default_factory=lambda: {"name": "expe"})

    @property
    def hidden(self) -> int:
        if self.ffn_hidden:
            return self.ffn_hidden
        if self.arch == "gpt":
            return 4 * self.d_model
        return 256 * -(-(8 * self.d_model // 3) // 256)  # Llama: 2/3 * 4d, multiple of 256

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Dropout(nn.Dropout):
    """nn.Dropout whose CPU mask is drawn with torch.rand and applied as one float multiply: about 1.4x
    faster than bernoulli_ forward and backward on CPU (bench/train_speed.py); CUDA keeps the fused kernel."""

    def forward(self, x):
        if not self.training or self.p == 0.0 or x.is_cuda:
            return super().forward(x)
        return x * _keep_mask(x, self.p)


def _keep_mask(x: torch.Tensor, p: float) -> torch.Tensor:
    """Inverted-dropout mask for x: 0 with probability p, else 1 / (1 - p); drawn with torch.rand and
    built in place in the draws' own buffer (the same mask as (rand >= p).to(dtype) * scale)."""
    return torch.rand_like(x).ge_(p).mul_(1.0 / (1.0 - p))


IGNORE = -100  # targets not scored (the recall tasks' non-answer positions), as in F.cross_entropy


class _CrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of (N, V) fp32 logits over the targets that are not IGNORE, in fewer passes
    over the logits than log_softmax + nll_loss: forward keeps exp(logits - max) and its row sums, and
    backward scales them in place into softmax - onehot; no (N, V) zero-filled gradient, no second exp.
    Equal to F.cross_entropy up to rounding (tests/test_model.py); 1.04-1.07x per training step at
    vocabulary 2048 on the CPU (docs/performance.md). Its backward may run once per graph: it writes
    the gradient into its saved buffer (1.04-1.07x over a copy), and autograd's version check refuses
    a second backward."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = target != IGNORE
        tgt = torch.where(valid, target, 0)[:, None]
        m = logits.amax(1, keepdim=True)
        e = torch.sub(logits, m).exp_()
        s = e.sum(1, keepdim=True)
        n = valid.sum().to(logits.dtype)
        per_token = s.log().add_(m).sub_(logits.gather(1, tgt)).squeeze(1)
        ctx.save_for_backward(e, s, tgt, valid, n)
        return torch.where(valid, per_token, 0.0).sum() / n

    @staticmethod
    @once_differentiable
    def backward(ctx, g: torch.Tensor):
        e, s, tgt, valid, n = ctx.saved_tensors
        coef = (g / n) * valid.to(e.dtype)[:, None]  # d loss / d per-token loss, 0 where not scored
        grad = e.mul_(coef / s)  # softmax * coef, in the saved buffer
        grad.scatter_add_(1, tgt, -coef)
        return grad, None


def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy ignoring IGNORE targets: the fused `_CrossEntropy` on the CPU when gradients
    are needed; F.cross_entropy elsewhere (CUDA's kernel is fused already; under torch.func transforms,
    which a custom Function with an in-place backward does not support)."""
    if logits.is_cuda or not (torch.is_grad_enabled() and logits.requires_grad) \
            or torch._C._are_functorch_transforms_active():  # torch.func (vmap, grad): torch's own
        return F.cross_entropy(logits, target, ignore_index=IGNORE)
    return _CrossEntropy.apply(logits, target)


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float):
        super().__init__()
        self.eps, self.weight = eps, nn.Parameter(torch.ones(d))

    def forward(self, x):
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def norm(cfg: ModelConfig) -> nn.Module:
    return nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps) if cfg.arch == "gpt" else RMSNorm(cfg.d_model, cfg.norm_eps)


class Attention(nn.Module):
    BIAS_BLOCK = 512  # query block of attention with an additive bias at long lengths

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, bias = cfg.d_model, cfg.arch == "gpt"
        self.n_head, self.dropout = cfg.n_head, cfg.dropout
        self.wq, self.wk, self.wv, self.wo = (nn.Linear(d, d, bias=bias) for _ in range(4))
        self.resid_dropout = Dropout(cfg.dropout)

    def forward(self, h_qk: torch.Tensor, h_v: torch.Tensor, pe: PositionalEncoding, ctx: Any = None) -> torch.Tensor:
        B, T, d = h_qk.shape

        def heads(x):
            return x.view(B, T, self.n_head, d // self.n_head).transpose(1, 2)

        q, k, v = heads(self.wq(h_qk)), heads(self.wk(h_qk)), heads(self.wv(h_v))
        y = pe.attention(q, k, v, ctx)  # an encoding that replaces attention (DCA), at inference
        if y is not None:
            return self.resid_dropout(self.wo(y.transpose(1, 2).reshape(B, T, d)))
        q, k = pe.rotate(q, k, ctx)
        bias = pe.attn_bias(ctx)
        if bias is not None and bias.dtype != q.dtype:
            bias = bias.to(q.dtype)
        p = self.dropout if self.training else 0.0
        if p > 0.0 and not q.is_cuda:
            y = _attention_with_dropout(q, k, v, bias, p)
        elif bias is None:  # no float mask unless the encoding needs one: is_causal alone is FlashAttention-eligible
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)
        elif T > 2 * self.BIAS_BLOCK:
            # an additive bias (ALiBi) rules out is_causal, so the kernel would score the masked upper
            # triangle too: query blocks see only the keys up to their end, skipping most of it
            y = torch.cat([F.scaled_dot_product_attention(
                q[:, :, a : a + self.BIAS_BLOCK], k[:, :, : a + self.BIAS_BLOCK], v[:, :, : a + self.BIAS_BLOCK],
                attn_mask=bias[..., a : a + self.BIAS_BLOCK, : a + self.BIAS_BLOCK], dropout_p=p)
                for a in range(0, T, self.BIAS_BLOCK)], dim=2)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p)
        return self.resid_dropout(self.wo(y.transpose(1, 2).reshape(B, T, d)))


_CAUSAL: dict[tuple, torch.Tensor] = {}


def _attention_with_dropout(q, k, v, bias, p: float) -> torch.Tensor:
    """Causal attention with dropout on the attention weights, on the CPU. SDPA falls back to its math
    path there (FlashAttention for CPU has no dropout) and draws the mask with bernoulli_; this is the
    same computation with the mask from torch.rand, as in `Dropout` (bench/train_speed.py measures it)."""
    T = q.shape[-2]
    if bias is None:
        key = (T, q.dtype)
        if key not in _CAUSAL:
            _CAUSAL[key] = torch.full((T, T), float("-inf"), dtype=q.dtype).triu_(1)
        bias = _CAUSAL[key]
    att = torch.softmax(torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-2, -1)) + bias, dim=-1)
    return torch.matmul(att * _keep_mask(att, p), v)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, h = cfg.d_model, cfg.hidden
        self.llama = cfg.arch == "llama"
        if self.llama:  # SwiGLU
            self.w1, self.w3, self.w2 = nn.Linear(d, h, bias=False), nn.Linear(d, h, bias=False), nn.Linear(h, d, bias=False)
        else:
            self.w1, self.w2 = nn.Linear(d, h), nn.Linear(h, d)
        self.dropout = Dropout(cfg.dropout)

    def forward(self, x):
        if self.llama:
            return self.dropout(self.w2(F.silu(self.w1(x)) * self.w3(x)))
        return self.dropout(self.w2(F.gelu(self.w1(x))))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm1, self.attn, self.norm2, self.mlp = norm(cfg), Attention(cfg), norm(cfg), MLP(cfg)

    def forward(self, x: torch.Tensor, pe: PositionalEncoding, ctx: Any = None) -> torch.Tensor:
        h = self.norm1(x)
        h_qk, h_v = pe.qk_input(h, ctx)  # ExPE overwrites here; the residual x keeps the original values
        x = x + self.attn(h_qk, h_v, pe, ctx)
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pe = build_encoding(cfg.pe, cfg)
        self.drop = Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm_f = norm(cfg)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by 1/sqrt(2 n_layer)
            if name.endswith(("attn.wo.weight", "mlp.w2.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / (2 * cfg.n_layer) ** 0.5)

    @staticmethod
    def _init(m: nn.Module):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def hidden_states(self, idx: torch.Tensor) -> torch.Tensor:
        """The final normed hidden states (B, T, d), before the output head."""
        x = self.tok_emb(idx)
        ctx = self.pe.context(idx.shape[1], idx.device, x.dtype)  # once per forward, shared by all blocks
        x = self.pe.after_dropout(self.drop(self.pe.embed(x, ctx)), ctx)
        for block in self.blocks:
            x = block(x, self.pe, ctx)
        return self.norm_f(x)

    LOSS_CHUNK = 512  # tokens per piece of the per-token loss: its logits stay in cache at any window length

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, reduction: str = "mean"):
        """logits; with targets, (logits, mean loss), or (None, per-token loss) for reduction="none": the
        per-token loss (evaluation, probes) is computed in pieces of LOSS_CHUNK tokens, never holding the
        logits of a whole long window (at 64 x L they are hundreds of MB and every pass misses the cache)."""
        h = self.hidden_states(idx)
        if targets is None:
            return self.lm_head(h)
        if reduction == "none":
            flat, tgt = h.flatten(0, 1), targets.flatten()
            loss = torch.cat([F.cross_entropy(self.lm_head(flat[a : a + self.LOSS_CHUNK]).float(),
                                              tgt[a : a + self.LOSS_CHUNK], reduction="none")
                              for a in range(0, flat.shape[0], self.LOSS_CHUNK)])
            return None, loss.view(targets.shape)
        logits = self.lm_head(h)
        return logits, cross_entropy(logits.float().flatten(0, 1), targets.flatten())

    def param_counts(self) -> dict[str, int]:
        total = sum(p.numel() for p in self.parameters())  # tied weights counted once
        return {"total": total, "non_embedding": total - self.tok_emb.weight.numel()}

    def flops_per_token(self, T: int) -> float:
        """Training FLOPs per token (PaLM appendix B / nanoGPT): 6N + 12 * n_layer * n_head * head_dim * T,
        N = the parameters used in matmuls (all but the input embedding lookup; a tied head counts)."""
        c = self.cfg
        n = self.param_counts()["non_embedding"] + (c.vocab_size * c.d_model if c.tie_embeddings else 0)
        return 6 * n + 12 * c.n_layer * c.d_model * T


def preset(name: str, **overrides: Any) -> ModelConfig:
    if name not in PRESETS:
        raise ConfigError(f"model.preset: unknown preset {name!r} (allowed: {', '.join(PRESETS)})")
    return ModelConfig(**{**PRESETS[name], **overrides})
