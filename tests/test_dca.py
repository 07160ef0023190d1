"""Dual Chunk Attention (An et al. 2024): the specification, pair by pair.

c = chunk_size (the span of positions, <= training length), w = local_window, s = c - w tokens a chunk.
For query i and key j <= i the key sits at j mod s; the query at
    i mod s                                   same chunk
    [s, s+1, ..., s+w-1, c-1, ..., c-1][i mod s]   the chunk just before
    c - 1                                     any earlier chunk
"""

import math

import pytest
import torch
import torch.nn.functional as F

from expe.nn.dca import dca_attention, dca_positions, rope_rotate

torch.set_num_threads(1)


def inv_freq(hd, base=10000.0):
    return base ** (-torch.arange(0, hd, 2, dtype=torch.float32) / hd)


def dca_rule(i, j, c, w):
    """(query position, key position) of the pair (i, j), written out as the paper's lists."""
    s = c - w
    succ = list(range(s, s + w)) + [c - 1] * s  # P_q^succ over one chunk
    back = i // s - j // s
    pq = i % s if back == 0 else succ[i % s] if back == 1 else c - 1
    return pq, j % s


def rope_one(x, pos, freqs, scale=1.0):
    """RoPE of one vector (hd,), rotate-half layout: the pair (x[m], x[m + hd/2]) as a complex number
    turned by pos * freqs[m]."""
    h = x.shape[-1] // 2
    z = torch.complex(x[:h].double(), x[h:].double()) * torch.polar(
        torch.full((h,), scale, dtype=torch.float64), pos * freqs.double())
    return torch.cat([z.real, z.imag])


def qkv(T, B=1, H=2, hd=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, H, T, hd, generator=g) for _ in range(3))


def test_rope_rotate_is_rotate_half_rope():
    x, freqs = next(qkv(7, B=1, H=1)), inv_freq(8)
    pos = torch.tensor([0, 3, 1, 6, 2, 5, 4])
    y = rope_rotate(x, pos, freqs, scale=1.5)
    for n in range(7):
        assert torch.allclose(y[0, 0, n].double(), rope_one(x[0, 0, n], int(pos[n]), freqs, 1.5), atol=1e-5)


@pytest.mark.parametrize("c, w, scale", [(6, 2, 1.0), (7, 3, 1.2), (4, 1, 1.0), (5, 0, 1.0), (9, 4, 1.0)])
def test_matches_the_pair_by_pair_rule(c, w, scale):
    T, hd = 13, 8
    q, k, v = qkv(T, hd=hd)
    freqs = inv_freq(hd)
    want = torch.zeros(1, 2, T, hd, dtype=torch.float64)
    for h in range(2):
        for i in range(T):
            scores = []
            for j in range(i + 1):
                pq, pk = dca_rule(i, j, c, w)
                qi, kj = rope_one(q[0, h, i], pq, freqs, scale), rope_one(k[0, h, j], pk, freqs, scale)
                scores.append(qi @ kj / math.sqrt(hd))
            want[0, h, i] = torch.softmax(torch.stack(scores), 0) @ v[0, h, : i + 1].double()
    got = dca_attention(q, k, v, freqs, chunk_size=c, local_window=w, scale_cos_sin=scale)
    assert torch.allclose(got.double(), want, atol=1e-5)


@pytest.mark.parametrize("c, w", [(13, None), (13, 6), (20, None), (20, 10)])
def test_within_the_trained_span_it_is_plain_rope_attention(c, w):
    # with w <= c/2 and T <= c no pair is inter-chunk and the successive queries keep their true positions
    T, hd = 13, 8
    q, k, v = qkv(T, B=2, hd=hd, seed=1)
    freqs = inv_freq(hd)
    n = torch.arange(T)
    plain = F.scaled_dot_product_attention(rope_rotate(q, n, freqs), rope_rotate(k, n, freqs), v, is_causal=True)
    assert torch.allclose(dca_attention(q, k, v, freqs, chunk_size=c, local_window=w), plain, atol=1e-5)


@pytest.mark.parametrize("c, w", [(8, None), (8, 2), (16, 4), (10, 0), (64, None)])
def test_every_distance_stays_inside_the_span(c, w):
    w_ = max(1, c // 8) if w is None else w
    s = c - w_
    T = 10 * s
    pos = dca_positions(torch.arange(T), c, w)
    i, j = torch.tril_indices(T, T)
    back = pos["chunk"][i] - pos["chunk"][j]
    pq = torch.where(back == 0, pos["intra"][i], torch.where(back == 1, pos["succ"][i], pos["inter"][i]))
    dist = pq - pos["key"][j]
    assert dist.min() >= 0 and dist.max() < c  # never beyond the trained range
    assert torch.equal(dist[back == 0], (i - j)[back == 0])  # inside a chunk: the true distance
    if w_ > 0:  # across a chunk boundary the nearest key stays at distance 1
        assert torch.all(dist[(back == 1) & (i - j == 1)] == 1)
    for m in range(0, len(i), 97):  # the vectorised rule is the written-out one
        a, b = int(i[m]), int(j[m])
        assert (int(pq[m]), int(pos["key"][b])) == dca_rule(a, b, c, w_)


def test_query_blocks_and_a_cache_do_not_change_the_result():
    T, hd = 37, 8
    q, k, v = qkv(T, B=2, H=3, hd=hd, seed=2)
    freqs = inv_freq(hd)
    whole = dca_attention(q, k, v, freqs, chunk_size=6, local_window=2, block_size=T)
    blocked = dca_attention(q, k, v, freqs, chunk_size=6, local_window=2, block_size=5)
    assert torch.allclose(blocked, whole, atol=1e-6)
    last = dca_attention(q[:, :, -3:], k, v, freqs, chunk_size=6, local_window=2, block_size=2)  # decoding
    assert torch.allclose(last, whole[:, :, -3:], atol=1e-6)


def test_local_window_must_leave_room_for_a_chunk():
    q, k, v = qkv(5)
    with pytest.raises(ValueError, match="local_window"):
        dca_attention(q, k, v, inv_freq(8), chunk_size=4, local_window=4)
