"""How much of its training window a model uses: the loss at ev = 1 by tokens of context, in
log-spaced bins, and the context gain (loss with 1-4 tokens of context minus loss with L/2 .. L).
Measured through the real evaluation on documents that repeat with a period of 8 tokens, so a model
that copies from 8 tokens back can predict exactly the tokens that have at least 8 tokens of context."""

import json

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from conftest import write_shards
from expe.data.shards import TokenShard
from expe.evaluation.extrapolation import evaluate_length
from expe.report import catalog, plots
from expe.report.results import Results
from expe.report.summary import context_use_sentence
from expe.report.tables import context_bins, context_gain, context_use_table

V, L, PERIOD = 97, 64, 8


@pytest.fixture
def periodic(tmp_path):
    """Held-out documents: a random block of PERIOD tokens repeated (nothing else is predictable)."""
    rng = np.random.default_rng(0)
    docs = [np.tile(rng.integers(0, V, PERIOD), 80) for _ in range(3)]
    return TokenShard(write_shards(tmp_path / "p", {"test": docs}, vocab=V), "test")


class Copier(torch.nn.Module):
    """Predicts the token PERIOD positions back with probability p when the window reaches that far,
    else every token with probability 1/V: it uses (only) the context of 8 tokens and more."""

    def __init__(self, p=0.9):
        super().__init__()
        self.p = p

    def forward(self, x, y, reduction="none"):
        B, T = y.shape
        loss = torch.full((B, T), float(np.log(V)))
        j = torch.arange(T)
        seen = j + 1 >= PERIOD  # target j (window position j + 1) has j + 1 tokens of context
        src = x[:, (j + 1 - PERIOD).clamp(min=0)]
        hit = (src == y) & seen
        loss[hit] = -float(np.log(self.p))
        loss[~hit & seen] = -float(np.log((1 - self.p) / (V - 1)))
        return None, loss


class Unigram(torch.nn.Module):
    def forward(self, x, y, reduction="none"):
        return None, torch.full(y.shape, float(np.log(V)))


def results_of(tmp_path, shard, models: dict) -> Results:
    """Evaluate each (name -> {seed: model}) at ev = 1 as `expe evaluate` does, and read it back."""
    index = {"models": {}, "eval": {}}
    for name, by_seed in models.items():
        for seed, model in by_seed.items():
            r = evaluate_length(model, shard, L, None, 8, torch.device("cpu"), train_length=L)
            rel = f"eval/{name}/s{seed}.json"
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / rel).write_text(json.dumps({"train_length": L, "results": [{"ev": 1, **r}]}))
            index["eval"].setdefault(name, {})[str(seed)] = {"base": rel}
    return Results(index, root=tmp_path)


CONFIG = {"tables": {"section41": {"Copier": "copier", "Unigram": "unigram"}}}


@pytest.fixture
def table(tmp_path, periodic):
    res = results_of(tmp_path, periodic, {"copier": {1: Copier(0.9), 2: Copier(0.8)}, "unigram": {1: Unigram(), 2: Unigram()}})
    return context_use_table(CONFIG, res, "test"), res


def test_bins_are_log_spaced_from_one_token_of_context_to_the_whole_window():
    assert context_bins(64) == [(1, 1), (2, 3), (4, 7), (8, 15), (16, 31), (32, 64)]
    for n in (8, 16, 48, 64, 512):
        bins = context_bins(n)
        covered = [c for lo, hi in bins for c in range(lo, hi + 1)]
        assert covered == list(range(1, n + 1))  # every prediction of a window exactly once
        assert bins[-1] == (n // 2, n)  # the last bin: L/2 .. L tokens of context


def test_a_model_that_uses_its_context_has_a_positive_context_gain_and_one_that_does_not_has_none(table):
    t, _ = table
    assert t.columns == ["Model", "c=1", "c=2–3", "c=4–7", "c=8–15", "c=16–31", "c=32–64", "context gain"]
    copier, unigram = t.rows
    for cell in copier[1:4]:  # fewer than 8 tokens of context: the copier cannot see the repeat
        assert cell.mean == pytest.approx(np.log(V), abs=1e-4)  # the curve is stored to 5 decimals
    for cell in copier[4:7]:  # 8 and more: it copies (p = 0.9 and 0.8 for the two seeds)
        assert cell.mean == pytest.approx(-(np.log(0.9) + np.log(0.8)) / 2, abs=1e-4)
    gain = copier[-1]
    assert gain.n == 2 and gain.mean > 4.0 and gain.mean - gain.half > 3.0  # ln 97 - ln(1/0.85): 4.4 nats, interval > 0
    assert unigram[-1].mean == pytest.approx(0.0, abs=1e-9) and unigram[-1].half == pytest.approx(0.0, abs=1e-9)


def test_the_context_gain_compares_contexts_1_to_4_with_the_second_half_of_the_window():
    curve = np.r_[np.full(4, 5.0), np.full(28, 9.0), np.full(32, 3.0)]  # c = 1..4, 5..32, 33..64
    assert context_gain(curve) == pytest.approx(5.0 - (9.0 + 32 * 3.0) / 33)  # c = 32 .. 64: 33 predictions


def test_the_readme_sentence_quotes_the_tables_gains(table):
    t, _ = table
    text = " ".join(context_use_sentence({"tables": {"section41": CONFIG["tables"]["section41"]}}, t))
    assert f"{t.rows[1][-1].mean:.2f}–{t.rows[0][-1].mean:.2f} nats" in text
    share = (t.rows[0][-1].mean + t.rows[0][-2].mean - t.rows[0][4].mean) / t.rows[0][-1].mean
    assert f"{share:.0%}" in text  # the copier has all of its gain by 8-15 tokens of context


def test_context_plots_are_single_column_with_at_most_five_lines_per_panel_and_readable_fonts(table, monkeypatch):
    _, res = table
    rows = {f"Model {i}": "copier" if i % 2 else "unigram" for i in range(8)}
    config = {"tables": {"section41": rows, "ablations": {}, "large": {}, "scaling": {}}}
    figs = {}
    monkeypatch.setattr(plots, "save", lambda fig, out, name: figs.setdefault(name, fig))
    plots.context_use(config, res, None)
    fig = figs["context_use_section41"]
    assert fig.get_figwidth() == pytest.approx(3.5)
    axes = fig.get_axes()
    assert [len(ax.get_legend().get_texts()) for ax in axes] == [4, 4]  # 8 rows: two stacked panels of 4
    texts = [t for ax in axes for t in ax.findobj(plt.Text) if t.get_text()]
    assert min(t.get_fontsize() for t in texts) >= 7
    assert catalog.chunks({i: i for i in range(11)}) == [{0: 0, 1: 1, 2: 2, 3: 3}, {4: 4, 5: 5, 6: 6, 7: 7},
                                                         {8: 8, 9: 9, 10: 10}]
    plt.close("all")
