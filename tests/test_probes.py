"""The long-context probes, written as a specification: where the repeat sits, what a model that
copies and one that cannot see the past score, passkey candidates, and that a precision setting
really reaches the forward pass."""

import numpy as np
import pytest
import torch

from conftest import tiny_spec, write_shards
from expe.nn.encodings import ExPE, ExQPE, NoPE, RoPE
from expe.evaluation.probes import (distinct_positions, passkey_candidates, passkey_probe, passkey_prompt, retrieval_probe,
                         retrieval_windows)
from expe.data.shards import TokenShard

V = 97


@pytest.fixture
def random_text(tmp_path):
    """Held-out 'text' of random tokens: nothing is predictable except what repeats."""
    rng = np.random.default_rng(1)
    return TokenShard(write_shards(tmp_path / "r", {"test": [rng.integers(0, V, 3000) for _ in range(3)]}), "test")


class Unigram:
    """No access to the past at all: every token has probability 1/V."""

    def nll(self, x):
        return torch.full((x.shape[0], x.shape[1] - 1), float(np.log(V)))

    def last(self, x, n):
        return torch.full((x.shape[0], n), -float(np.log(V))), torch.zeros(x.shape[0], n, dtype=torch.bool)


class Induction:
    """Copies: if the last `k` tokens occurred before within the last `reach` tokens, predicts the token
    that followed them with probability 0.9 (an induction head with a limited attention span)."""

    def __init__(self, reach=10**9, k=3):
        self.reach, self.k = reach, k

    def logp(self, row, j):
        """log p(row[j + 1] | row[: j + 1])."""
        ctx = row[max(0, j + 1 - self.k) : j + 1]
        for i in range(j - 1, max(self.k - 2, j - self.reach), -1):
            if i + 1 - self.k >= 0 and (row[i + 1 - self.k : i + 1] == ctx).all():
                return np.log(0.9) if row[i + 1] == row[j + 1] else np.log(0.1 / (V - 1))
        return -np.log(V)

    def nll(self, x):
        x = x.numpy()
        return torch.tensor([[-self.logp(r, j) for j in range(len(r) - 1)] for r in x])

    def last(self, x, n):
        x = x.numpy()
        lp = torch.tensor([[self.logp(r, j) for j in range(len(r) - n - 1, len(r) - 1)] for r in x])
        return lp, lp > np.log(0.5)


def test_the_repeat_starts_exactly_D_tokens_after_the_first_copy_inside_one_window(random_text):
    for D in (32, 64, 256):
        probes, controls, first = retrieval_windows(random_text, D, 16, 5)
        assert probes.shape == (5, first + D + 16)  # one window holds both copies
        for p, c in zip(probes, controls):
            assert (p[first : first + 16] == p[first + D : first + D + 16]).all()  # A ... A, D apart
            assert (c[first + D :] == p[first + D :]).all() and (c[:first] == p[:first]).all()
            assert not (c[first : first + 16] == p[first : first + 16]).all()  # the control has no first copy


def test_a_model_that_copies_gains_and_one_without_access_to_the_past_does_not(random_text):
    copy = retrieval_probe(Induction(), random_text, L=64, distances=[0.5, 2, 8], segment=16, segments=6)
    none = retrieval_probe(Unigram(), random_text, L=64, distances=[0.5, 2, 8], segment=16, segments=6)
    for r in copy:
        assert r["gain_vs_control"] > 3.0 and r["gain_vs_first"] > 3.0  # ln(97) - ln(1/0.9): about 4.5 nats
    for r in none:
        assert r["gain_vs_control"] == 0.0 and r["gain_vs_first"] == 0.0


def test_a_model_that_cannot_attend_D_tokens_back_shows_no_gain_at_D(random_text):
    short = retrieval_probe(Induction(reach=100), random_text, L=64, distances=[0.5, 4], segment=16, segments=6)
    assert short[0]["gain_vs_control"] > 3.0  # D = 32: within reach
    assert abs(short[1]["gain_vs_control"]) < 0.5  # D = 256: beyond reach, no retrieval


def test_passkey_candidates_hold_the_true_key_exactly_once():
    rng = np.random.default_rng(0)
    for _ in range(200):
        keys = passkey_candidates("0042", 10, 4, rng)
        assert keys[0] == "0042" and keys.count("0042") == 1 and len(set(keys)) == 10
        assert all(len(k) == 4 and k.isdigit() for k in keys)


class CharTok:
    """A character tokenizer (digits one token each, as our BPE splits them)."""

    def encode(self, s):
        return [ord(c) for c in s]


def test_the_passkey_prompt_fills_the_window_and_states_the_key_at_the_given_depth():
    tok = CharTok()
    prompt, answer = passkey_prompt(tok, "1234", 2000, 0.5)
    assert len(prompt) + len(answer) == 2000 and answer == tok.encode(" 1234")
    text = "".join(chr(c) for c in prompt)
    assert text.count("1234") == 2 and abs(text.find("pass key is 1234") / len(text) - 0.5) < 0.1
    assert text.endswith("What is the pass key? The pass key is")


def test_passkey_accuracy_is_one_for_a_model_that_copies_and_chance_for_one_that_cannot(random_text):
    tok = CharTok()
    copy = passkey_probe(Induction(k=8), tok, random_text, L=64, multiples=[4], trials=8, filler="sentences")
    none = passkey_probe(Unigram(), tok, random_text, L=64, multiples=[4], trials=8, filler="corpus")
    assert copy[0]["accuracy"] == 1.0 and copy[0]["greedy_exact"] == 1.0
    assert none[0]["accuracy"] == 0.0 and none[0]["mean_rank"] == 10  # all tie: ties count against the key
    assert none[0]["chance"] == 0.1


def test_a_precision_setting_reaches_the_forward_pass(shards, tmp_path):
    from expe.evaluation.extrapolation import evaluate
    from expe.training.loop import train

    train(tiny_spec(steps=4), shards, tmp_path / "m", tmp_path / "c", progress=False)
    seen = []
    from torch import nn

    hook = nn.modules.module.register_module_forward_hook(lambda m, i, o: seen.append(o.dtype)
                                                         if isinstance(m, nn.Linear) else None)
    try:
        r32 = evaluate(tmp_path / "m", shards, [1], progress=False, precision="fp32")
        n32 = len(seen)
        r16 = evaluate(tmp_path / "m", shards, [1], progress=False, precision="bf16")
    finally:
        hook.remove()
    assert set(seen[:n32]) == {torch.float32} and set(seen[n32:]) == {torch.bfloat16}
    assert r16["precision"] == "bf16" and r32["precision"] == "fp32"
    assert r16["results"][0]["loss"] != r32["results"][0]["loss"]


def test_bf16_merges_expe_positions_that_exqpe_keeps_apart():
    L = 64  # the CPU default: p_n = 1 + n/64; bf16 keeps 8 significant bits
    expe, exqpe = ExPE(64, L), ExQPE(64, L)
    assert distinct_positions(expe, 3 * L, torch.bfloat16) == 3 * L  # values < 4: steps of 1/64 still exact
    assert 3 * L < distinct_positions(expe, 4 * L, torch.bfloat16) < 4 * L - L // 4  # in [4, 5) pairs merge
    T = 16 * L
    assert distinct_positions(expe, T, torch.float32) == T
    assert distinct_positions(expe, T, torch.bfloat16) < T // 2  # 457 of 1024
    assert distinct_positions(exqpe, T, torch.bfloat16) == T
    assert distinct_positions(RoPE(16, 64), T, torch.float32) == T
    assert distinct_positions(NoPE(), T, torch.bfloat16) is None
