"""The long-context probes, written as a specification: where the repeat sits, what a model that
copies and one that cannot see the past score, the positive control inside L, passkey keys drawn
from frequent words of the training split, prompts drawn from the model's seed, the passkey plot's
Wilson intervals, and that a precision setting really reaches the forward pass."""

import json
import re
import shutil

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from conftest import REPO, tiny_spec, write_shards
from expe import config as C
from expe.data.shards import TokenShard
from expe.errors import ConfigError
from expe.evaluation import probes
from expe.evaluation.probes import (INTRO, NEEDLE, QUESTION, distinct_positions, draw_keys, passkey_candidates,
                                    passkey_probe, passkey_prompt, retrieval_probe, retrieval_windows, word_pool)
from expe.nn.encodings import ExPE, ExQPE, NoPE, RoPE
from expe.report import stats
from expe.report.beyond import inside_L, passkey_plot, passkey_table, retrieval_plot

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


# --------------------------------------------------------------------------- the positive control inside L

def test_the_shortest_default_distance_puts_the_whole_probe_inside_one_training_window(random_text):
    r = {k: C.default(f"beyond.retrieval.{k}") for k in ("distances", "prefix")}
    for path in sorted((REPO / "config").glob("*.yaml")):
        cfg = C.load(path)
        assert inside_L(cfg, C.beyond_models(cfg)), f"{path.name}: no retrieval distance fits in L"
    L = 64
    prefix = C.retrieval_prefix(L, r["prefix"])
    probes_, _, first = retrieval_windows(random_text, int(min(r["distances"]) * L), L // 8, 4, prefix=prefix)
    assert probes_.shape[1] <= L  # prefix 8 + D = L/4 + segment L/8 = 32 tokens: one window holds the whole probe
    row = retrieval_probe(Induction(), random_text, L, [min(r["distances"])], segments=4)[0]
    assert row["inside_L"] and row["window"] == 8 + 16 + 8 and row["segment"] == row["prefix"] == L // 8
    assert row["gain_vs_control"] > 3.0  # a model that copies passes the control
    assert not retrieval_probe(Induction(), random_text, L, [1.0], segments=4)[0]["inside_L"]


def _config(**beyond):
    cfg = C.read_yaml(REPO / "config/smoke.yaml")
    return C.deep_merge(cfg, {"beyond": beyond})


def test_a_distance_shorter_than_the_span_and_a_pool_smaller_than_the_candidates_are_config_errors():
    with pytest.raises(ConfigError, match=r"beyond.retrieval.distances: D=0.1L is 3 tokens .* shorter than the repeated span \(4"):
        C.validate(_config(retrieval={"distances": [0.1, 1]}))
    with pytest.raises(ConfigError, match="beyond.passkey.pool: 5 words cannot give 10 distinct candidates"):
        C.validate(_config(passkey={"pool": 5, "candidates": 10}))
    C.validate(_config(passkey={"pool": 5, "candidates": 10, "keys": "digits"}))  # the pool is not used


# --------------------------------------------------------------------------- passkey keys from the corpus' words

class WordTok:
    """Words with their leading space are one token each, except " stay" and " start": two (" sta" + "y" /
    "rt"), " sta" being a word piece as BPE makes them; every other character is a token of its own."""

    SPLIT = {" stay": [" sta", "y"], " start": [" sta", "rt"]}

    def __init__(self):
        self.vocab: list[str] = []
        self.encode(INTRO + NEEDLE + QUESTION + probes.FILLER)

    def _id(self, piece):
        if piece not in self.vocab:
            self.vocab.append(piece)
        return self.vocab.index(piece)

    def encode(self, text):
        out = []
        for m in re.findall(r" ?[A-Za-z]+|[^A-Za-z]", text):
            out += [self._id(p) for p in self.SPLIT.get(m, [m])]
        return out

    def pieces(self):
        return list(self.vocab)


WORDS = ["crown", "sword", "ghost", "heath", "storm", "honour", "blood", "night", "queen", "castle", "fool", "death"]


@pytest.fixture
def corpus(tmp_path):
    """A training split in which word i of WORDS occurs 40 - 2i times, besides very frequent tokens
    that must never be keys: " the" (a word of the prompt), " a" (too short) and " sta" (a word piece)."""
    tok = WordTok()
    rng = np.random.default_rng(0)
    words = [w for i, w in enumerate(WORDS) for _ in range(40 - 2 * i)] + ["the"] * 90 + ["a"] * 80 + ["stay"] * 30 + ["start"] * 20
    rng.shuffle(words)
    ids = tok.encode("".join(f" {w}" + ("." if i % 7 == 6 else "") for i, w in enumerate(words)))
    shard = TokenShard(write_shards(tmp_path / "w", {"train": [ids]}, vocab=len(tok.vocab) + 50), "train")
    return tok, shard


def test_the_key_pool_is_the_most_frequent_whole_words_none_of_them_the_prompts_own(corpus):
    tok, shard = corpus
    assert word_pool(tok, shard, 5) == WORDS[:5]  # not "the", "a" or the piece "sta", though each is more frequent
    assert word_pool(tok, shard, 100) == WORDS  # a smaller vocabulary gives a smaller pool


class Recorder(Unigram):
    """Blind to the past; keeps every batch of candidate rows it is asked to rank."""

    def __init__(self):
        self.batches = []

    def last(self, x, n):
        self.batches.append(x.clone())
        return super().last(x, n)


def _prompts(tok, shard, seed, trials=6):
    rec = Recorder()
    pool = word_pool(tok, shard, 10)
    r = passkey_probe(rec, tok, shard, L=64, multiples=[1], trials=trials, candidates=5, words=pool, filler="sentences",
                      seed=seed)
    return rec.batches, pool, r[0]


def test_passkey_keys_come_from_the_word_pool_and_the_true_key_is_among_the_candidates_exactly_once(corpus):
    tok, shard = corpus
    batches, pool, row = _prompts(tok, shard, seed=1)
    ids = {tok.encode(f" {w}")[0]: w for w in pool}
    for rows in batches:
        keys = [ids[int(r[-1])] for r in rows]  # each row: the prompt, then one candidate (one token)
        assert len(set(keys)) == 5 and all(k in pool for k in keys)
        needle = tok.encode(NEEDLE.format(key=keys[0]))
        prompt = rows[0, :-1].tolist()
        assert any(prompt[i : i + len(needle)] == needle for i in range(len(prompt)))  # row 0: the true key
        assert all(tok.encode(f" {k}")[0] not in prompt for k in keys[1:])  # the others never appear before
    assert row["keys"] == "words" and row["chance"] == 1 / 5 and row["accuracy"] == 0.0  # ties count against
    rng = np.random.default_rng(0)
    true = [draw_keys(rng, 5, pool)[0] for _ in range(2000)]
    assert set(true) == set(pool) and max(map(true.count, pool)) < 2000 / 10 * 1.3  # uniform over the pool


def test_two_seeds_draw_different_prompts_and_one_seed_the_same(corpus, random_text):
    tok, shard = corpus
    a, b, a2 = (_prompts(tok, shard, seed)[0] for seed in (1, 2, 1))
    assert any(not torch.equal(x, y) for x, y in zip(a, b))
    assert all(torch.equal(x, y) for x, y in zip(a, a2))  # models with the same seed are paired
    p1, _, _ = retrieval_windows(random_text, 32, 8, 6, seed=1)
    p2, _, _ = retrieval_windows(random_text, 32, 8, 6, seed=2)
    assert not np.array_equal(p1, p2)


def test_the_probes_draw_their_prompts_from_the_models_training_seed(shards, tmp_path, monkeypatch):
    from expe.training.loop import train

    train(tiny_spec(steps=2), shards, tmp_path / "m", tmp_path / "c", progress=False)
    other = tmp_path / "m2"
    shutil.copytree(tmp_path / "m", other)
    cfg = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**cfg, "seed": cfg["seed"] + 1}))
    seen = []
    monkeypatch.setattr(probes, "retrieval_probe", lambda *a, seed, **kw: seen.append(seed) or [])
    for d in (tmp_path / "m", other):
        out = probes.run_probes({"retrieval": {"distances": [1.0]}}, d, shards, device="cpu")
        assert out["retrieval"]["seed"] == json.loads((d / "config.json").read_text())["seed"]
    assert seen == [cfg["seed"], cfg["seed"] + 1]


# --------------------------------------------------------------------------- the passkey plot

def test_the_passkey_plot_draws_the_tables_wilson_intervals_over_the_pooled_trials():
    rows, acc = [], {("a", 1): [0.5, 0.75, 1.0], ("a", 4): [0.0, 0.25, 0.0], ("b", 1): [0.25, 0.0, 0.25]}
    for (m, x), values in acc.items():
        for seed, v in enumerate(values, 1):
            rows.append(dict(model=m, seed=seed, probe="passkey", metric="accuracy", x=x, value=v, n=12, source="f"))
    rows.append(dict(model="b", seed=1, probe="passkey", metric="status", x=4, value="not run: too short", n=0, source="f"))
    df = pd.DataFrame(rows)  # a "not run" reason makes the value column hold text too
    lab = {"a": "Model A", "b": "Model B"}
    fig = passkey_plot(df, ["a", "b"], lab, chance=0.1)
    table = {r[0]: r for r in passkey_table(df, ["a", "b"], lab, "", 0.1).rows if r[1].startswith("rank")}
    drawn = 0
    for ax in fig.axes:
        for c in ax.containers:
            m = {v: k for k, v in lab.items()}[c.get_label()]
            xs = sorted(x for mm, x in acc if mm == m)
            y = c.lines[0].get_ydata()
            segs = c.lines[2][0].get_segments()
            for i, x in enumerate(xs):
                k = int(round(sum(v * 12 for v in acc[(m, x)])))
                p, lo, hi = stats.wilson(k, 36)  # 3 seeds x 12 trials, pooled
                assert y[i] == pytest.approx(p)
                assert segs[i][0][1] == pytest.approx(lo) and segs[i][1][1] == pytest.approx(hi)
                assert f"{p:.2f} [{lo:.2f}, {hi:.2f}]" in table[lab[m]]  # the same numbers as the table
                drawn += 1
    assert drawn == 3 and table["Model B"][3] == "not run: too short"
    plt.close(fig)
    gains = pd.DataFrame([dict(model="a", seed=s, probe="retrieval", metric="gain_vs_control", x=x, value=0.1 * s, n=4,
                               source="f") for s in (1, 2, 3) for x in (0.25, 1.0)])
    fig = retrieval_plot(pd.concat([df, gains]), ["a", "b"], lab, {0.25})  # the text column does not stop it
    line = fig.axes[0].get_lines()[0]
    assert list(line.get_ydata()) == pytest.approx([0.2, 0.2])  # mean over the seeds at each distance
    plt.close(fig)


def test_the_positive_control_reads_every_distance_inside_L_and_never_calls_a_null_result_no_copying():
    from expe.report.beyond import positive_control_sentence
    from expe.report.render import Est, Table

    t = Table("retrieval", "t", "c", ["Model", "gain vs", "D=0.25L (inside L)", "D=0.5L (inside L)", "D=1L"])
    t.add(["A", "control", Est(0.001, 0.004, 3), Est(0.008, 0.002, 3), Est(0.5, 0.1, 3)])  # copies at 0.5L only
    t.add(["B", "control", Est(-0.01, 0.02, 3), Est(0.0, 0.01, 3), Est(0.5, 0.1, 3)])
    t.add(["A", "first copy", Est(0.3, 0.1, 3), Est(0.3, 0.1, 3), Est(0.3, 0.1, 3)])
    (text, _) = positive_control_sentence(t)
    assert "D=0.25L, D=0.5L" in text and "1 of 2 models" in text and "A +0.008 at D=0.5L" in text
    assert "by chance with probability up to 5%" in text  # two one-sided 2.5% tests per model
    assert "For B no interval inside L lies above 0" in text and "0.500" not in text  # beyond L is not the control
    t.rows[0][3] = Est(0.0, 0.01, 3)
    (text, _) = positive_control_sentence(t)
    assert "0 of 2 models" in text and "not evidence of its absence" in text and "copies even" not in text
