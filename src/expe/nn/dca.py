"""Dual Chunk Attention (DCA): a training-free, inference-time long-context option for RoPE models.

An, Huang, Zhang, Gong, Qiu, Zhou, Kong (ICML 2024), "Training-Free Long-Context Scaling of Large
Language Models", arXiv:2402.17463; reference code github.com/HKUNLP/ChunkLlama
(`chunkllama_attn_replace.py`). The ExPE paper names DCA as future work beside position
interpolation, NTK and YaRN (those live in `RoPE`, encodings.py).

DCA changes no weight and drops no key: every query still attends to every earlier key, but the
RoPE position given to the query depends on how far back the key's chunk lies, so that no
query-key distance ever leaves the range seen in training.

Symbols (the paper's):
    c  the span of positions DCA may use, at most the training length L   -> `chunk_size`
    w  the local window                                                   -> `local_window`
    s  = c - w, the number of tokens in a chunk                           -> derived
A token n lies in chunk floor(n / s); key j, query i.

Choosing them: any c <= L keeps every distance inside the trained range; our default is c = L.
ChunkLlama itself uses c = 3L/4 (`chunk_size = pretraining_length * 3 // 4`) and w = L/8 (L/16 in
its first release), a margin worth a sweep. Our default w = max(1, c // 8) is ChunkLlama's L/8 at
c = L. With w <= c/2 and T <= c, DCA is exactly plain causal RoPE attention, so a model evaluated
at or below its training length is untouched.
"""

import math

import torch

__all__ = ["rope_rotate", "dca_positions", "dca_attention"]


def rope_rotate(x: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Rotate x (..., T, hd) to `positions` (T,): rotate-half RoPE, the pair (i, i + hd/2) turned by
    positions * inv_freq[i]; cos and sin are multiplied by `scale` (a logit temperature, as YaRN's).
    For positions = arange(T) this is `RoPE.rotate` of encodings.py."""
    angles = torch.outer(positions.to(torch.float32), inv_freq.to(torch.float32))  # (T, hd/2)
    angles = torch.cat([angles, angles], dim=-1)  # (T, hd)
    cos, sin = angles.cos() * scale, angles.sin() * scale
    x1, x2 = x.chunk(2, dim=-1)
    return torch.addcmul(x * cos, torch.cat([-x2, x1], dim=-1), sin).to(x.dtype)  # as RoPE.rotate, to the bit


def _window(chunk_size: int, local_window: int | None) -> int:
    w = max(1, chunk_size // 8) if local_window is None else local_window
    if not 0 <= w < chunk_size:
        raise ValueError(f"DCA needs 0 <= local_window < chunk_size, got local_window={w}, chunk_size={chunk_size}")
    return w


def dca_positions(n: torch.Tensor, chunk_size: int, local_window: int | None = None):
    """The positions DCA gives tokens at absolute positions n: a dict of
    `key` (P_k), `intra` (P_q^intra), `succ` (P_q^succ), `inter` (P_q^inter) and `chunk` (floor(n/s)).
    See `dca_attention` for the rules."""
    c = chunk_size
    s = c - _window(c, local_window)
    t = n % s  # position inside the chunk
    return {"key": t, "intra": t, "succ": (t + s).clamp(max=c - 1), "inter": torch.full_like(n, c - 1),
            "chunk": n // s}


def dca_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, inv_freq: torch.Tensor, chunk_size: int,
                  local_window: int | None = None, scale_cos_sin: float = 1.0, *, block_size: int = 512) -> torch.Tensor:
    """Causal Dual Chunk Attention. q (B, H, Tq, hd), k and v (B, H, T, hd), all BEFORE rotation; the
    queries are the last Tq of the T positions (Tq = T for a whole sequence, Tq < T when decoding
    with a cache). Returns (B, H, Tq, hd).

    Position rules, with c = chunk_size, w = local_window, s = c - w (module docstring), for query i and
    key j <= i; the score is <rope(q_i, P_q), rope(k_j, P_k[j])> / sqrt(hd), so its distance is P_q - P_k[j]:

        keys, always                      P_k[j]          = j mod s
        intra-chunk  (same chunk)         P_q^intra[i]    = i mod s                   distance i - j in [0, s)
        successive   (chunk just before)  P_q^succ[i]     = min(s + i mod s, c - 1)   distance in [1, c)
                                          i.e. [s, s+1, ..., s+w-1, c-1, ..., c-1] over a chunk
        inter-chunk  (any earlier chunk)  P_q^inter[i]    = c - 1                     distance in [w, c)

    Sources: the paper's section 3 (Dual Chunk Attention): the intra-chunk keys and queries (i mod s),
    the inter-chunk query c - 1 (the largest position of pretraining), and the successive-chunk query
    list with w = c - s, which keeps the boundary local: the first key before a chunk is at distance 1.
    The three attentions are merged with their softmax normalisers (paper: flash attention's
    log-sum-exp; ChunkLlama `merge_attn_outputs`), which is one softmax over all keys: done here.

    Readings made (the paper and ChunkLlama's code differ by one; the code's names are ours):
    - `chunk_size` is c, as ChunkLlama's `chunk_size` variable; a chunk holds s = chunk_size - local_window
      tokens (the code's `chunk_len`).
    - The cap is the paper's c - 1. The code clamps the successive and inter query positions at
      `chunk_size` itself (`qc_t.clamp(max=chunk_size)`, inter = that table at s - 1), i.e. the paper's
      rule with c = chunk_size + 1; with the paper's cap, chunk_size = L never yields distance L.
    - `scale_cos_sin` multiplies cos and sin of every rotation (logits by its square); ChunkLlama's later
      code uses 0.05 ln(T/L) + 1 there for T > L. Default 1 (none).
    - Position interpolation composes by passing inv_freq / factor; NTK and YaRN by their inv_freq.

    Queries go in blocks of `block_size`: per block, one matmul with the inter-chunk query against all
    keys so far, overwritten by the intra and successive scores on the at most two chunks before; a
    (B, H, block, T) score tensor at a time, never (B, H, T, T).
    """
    B, H, Tq, hd = q.shape
    T = k.shape[-2]
    if Tq > T:
        raise ValueError(f"dca_attention: {Tq} queries but only {T} keys")
    n_k = torch.arange(T, device=q.device)
    pk, pq = dca_positions(n_k, chunk_size, local_window), dca_positions(n_k[T - Tq:], chunk_size, local_window)
    s = chunk_size - _window(chunk_size, local_window)

    k_rot = rope_rotate(k, pk["key"], inv_freq, scale_cos_sin)
    q_intra, q_succ, q_inter = (rope_rotate(q, pq[name], inv_freq, scale_cos_sin) for name in ("intra", "succ", "inter"))
    scale = 1.0 / math.sqrt(hd)

    out = []
    for a in range(0, Tq, block_size):
        b = min(a + block_size, Tq)
        n_q, cq = n_k[T - Tq + a : T - Tq + b], pq["chunk"][a:b]
        end = int(n_q[-1]) + 1  # keys after the block's last query are all masked
        lo = max(0, (int(cq[0]) - 1) * s)  # intra and successive keys lie in [lo, end)

        scores = q_inter[:, :, a:b] @ k_rot[:, :, :end].transpose(-1, -2)  # inter-chunk everywhere first
        kl = k_rot[:, :, lo:end].transpose(-1, -2)
        d = (cq[:, None] - pk["chunk"][None, lo:end])  # how many chunks back the key lies
        scores[..., lo:end] = torch.where(d == 0, q_intra[:, :, a:b] @ kl,
                                          torch.where(d == 1, q_succ[:, :, a:b] @ kl, scores[..., lo:end]))
        scores = (scores * scale).masked_fill(n_k[None, :end] > n_q[:, None], float("-inf"))
        p = torch.softmax(scores, dim=-1, dtype=torch.float32).to(v.dtype)
        out.append(p @ v[:, :, :end])
    return torch.cat(out, dim=2)
