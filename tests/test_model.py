"""Architectures: the paper's presets have the paper's parameter counts."""

import pytest
import torch

from expe.errors import ConfigError
from expe.nn.model import ModelConfig, Transformer, preset
from expe.nn.presets import PAPER_PARAMS


@pytest.mark.parametrize("name", list(PAPER_PARAMS))
def test_paper_presets_match_the_papers_parameter_counts_within_3_percent(name):
    with torch.device("meta"):  # no memory: counting only
        model = Transformer(preset(name, pe={"name": "rope" if name != "paper-small" else "expe"}))
    counts = model.param_counts()
    total, non_emb = PAPER_PARAMS[name]
    assert counts["total"] == pytest.approx(total, rel=0.03)
    if non_emb:
        assert counts["non_embedding"] == pytest.approx(non_emb, rel=0.03)


def test_section_41_model_is_gpt_style_with_an_untied_head():
    c = preset("paper-small")
    assert (c.d_model, c.n_layer, c.n_head, c.d_model // c.n_head, c.dropout, c.tie_embeddings) == (
        384, 6, 12, 32, 0.1, False)


def test_M_ties_the_input_embedding_to_the_head():
    with torch.device("meta"):
        m = Transformer(preset("paper-M", pe={"name": "expe"}))
    assert m.lm_head.weight is m.tok_emb.weight
    assert preset("paper-M").hidden == 2816 and preset("paper-S").hidden == 2048  # Llama 8d/3 rounded to 256


def test_bad_model_options_are_one_line_errors_when_the_config_is_validated():
    from expe import config as C

    def validate(arch, train=None):
        C.validate({"architectures": {"a": arch}, "train": train or {}, "benchmarks": {"tasks": []},
                    "models": {"m": {"architecture": "a", "pe": {"name": "nope"}}}})

    with pytest.raises(ConfigError, match="models.m.architecture: n_head 4 must divide d_model 30"):
        validate({"preset": "cpu-small", "d_model": 30, "n_head": 4})
    with pytest.raises(ConfigError, match="train.seq_len: must be >= 1, got -5"):
        validate({"preset": "cpu-small"}, {"seq_len": -5})
    with pytest.raises(ConfigError, match="architectures.a.arch: 'mamba' is not allowed"):
        validate({"preset": "cpu-small", "arch": "mamba"})
    with pytest.raises(ConfigError, match="architectures.a.preset: 'huge' is not allowed"):
        validate({"preset": "huge"})
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("huge")


@pytest.mark.parametrize("pe", ["nope", "alibi"])
def test_attention_with_dropout_is_sdpa_attention_when_nothing_is_dropped_and_drops_about_p(pe, monkeypatch):
    import torch.nn.functional as F

    from expe.nn import model as M

    torch.manual_seed(0)
    net = Transformer(ModelConfig(vocab_size=50, seq_len=16, d_model=32, n_layer=1, n_head=4, dropout=0.1, pe={"name": pe}))
    q, k, v = torch.randn(3, 2, 4, 12, 8).unbind(0)
    bias = net.pe.attn_bias(net.pe.context(12, torch.device("cpu"), torch.float32))
    want = F.scaled_dot_product_attention(q, k, v, is_causal=bias is None, attn_mask=bias)
    monkeypatch.setattr(torch, "rand_like", lambda x: torch.ones_like(x))  # keep every weight, scaled by 1/(1-p)
    torch.testing.assert_close(M._attention_with_dropout(q, k, v, bias, 0.25), want / 0.75)
    monkeypatch.undo()
    # the mask: q = k = 0 gives uniform causal weights 1/(i+1); v = identity returns the weights themselves
    T = 400
    x = M._attention_with_dropout(torch.zeros(1, 1, T, 8), torch.zeros(1, 1, T, 8), torch.eye(T)[None, None], None, 0.3)
    weights = torch.ones(T, T).tril() / torch.arange(1, T + 1)[:, None]
    got = x[0, 0][weights > 0]
    assert (x[0, 0][weights == 0] == 0).all()  # causal
    assert abs((got == 0).float().mean().item() - 0.3) < 0.005  # 80,200 weights: 0.3 +- 0.005 is 3 sd
    torch.testing.assert_close(got[got != 0], (weights[weights > 0] / 0.7)[got != 0])


def test_training_with_dropout_on_the_cpu_uses_the_torch_rand_attention_and_evaluation_uses_sdpa(monkeypatch):
    from expe.nn import model as M

    calls = []
    real = M._attention_with_dropout
    monkeypatch.setattr(M, "_attention_with_dropout", lambda *a: calls.append(1) or real(*a))
    net = Transformer(ModelConfig(vocab_size=50, seq_len=16, d_model=32, n_layer=2, n_head=4, dropout=0.1))
    x = torch.randint(0, 50, (2, 17))
    net.train()(x[:, :-1], x[:, 1:])[1].backward()
    assert len(calls) == 2
    with torch.no_grad():
        net.eval()(x[:, :-1], x[:, 1:])
    assert len(calls) == 2


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
def test_the_fused_cross_entropy_equals_torchs_with_ignored_targets_and_refuses_a_second_backward(dtype, tol):
    import torch.nn.functional as F

    from expe.nn.model import IGNORE, cross_entropy

    torch.manual_seed(0)
    x = torch.randn(300, 64, dtype=dtype) * 4
    t = torch.randint(0, 64, (300,))
    t[::3] = IGNORE  # the recall tasks' unscored positions
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    want, got = F.cross_entropy(a, t), cross_entropy(b, t)
    (2.5 * want).backward()
    (2.5 * got).backward(retain_graph=True)
    assert got.grad_fn.name().endswith("_CrossEntropyBackward")  # the fused path, not F.cross_entropy
    assert abs(got.item() - want.item()) <= tol * abs(want.item())
    torch.testing.assert_close(b.grad, a.grad, rtol=0, atol=tol * a.grad.abs().max().item())
    assert (b.grad[::3] == 0).all()  # ignored rows get no gradient
    with pytest.raises(RuntimeError, match="inplace"):  # its backward reuses a saved buffer: once only
        got.backward()
    with torch.no_grad():  # evaluation: torch's own
        assert cross_entropy(x, t).item() == F.cross_entropy(x, t).item()
    assert cross_entropy(x.requires_grad_(), torch.full_like(t, IGNORE)).isnan()  # nothing scored: NaN, as torch
    from torch.func import grad, vmap  # under torch.func transforms: torch's own, same gradients

    xs, ts = x.detach().view(3, 100, 64), t.view(3, 100)
    torch.testing.assert_close(vmap(grad(cross_entropy))(xs, ts), vmap(grad(F.cross_entropy))(xs, ts), rtol=0, atol=0)


def test_a_training_step_with_the_fused_cross_entropy_matches_one_with_torchs(monkeypatch):
    import torch.nn.functional as F

    from expe.nn import model as M

    x = torch.randint(0, 50, (4, 17))
    grads = []
    for fused in (True, False):
        if not fused:
            monkeypatch.setattr(M, "cross_entropy", lambda l, t: F.cross_entropy(l, t, ignore_index=M.IGNORE))
        torch.manual_seed(0)
        net = Transformer(ModelConfig(vocab_size=50, seq_len=16, d_model=32, n_layer=2, n_head=4, dropout=0.1))
        torch.manual_seed(1)
        loss = net.train()(x[:, :-1], x[:, 1:])[1]
        loss.backward()
        grads.append((loss.item(), torch.cat([p.grad.flatten() for p in net.parameters()])))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-6)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-4, atol=1e-7)


def test_the_allocator_tuning_applies_on_glibc_and_can_be_switched_off(monkeypatch):
    import platform

    from expe import malloc

    monkeypatch.setenv("EXPE_MALLOC_TUNE", "0")
    assert malloc.tune() is False
    monkeypatch.delenv("EXPE_MALLOC_TUNE")
    assert malloc.tune() is (platform.libc_ver()[0] == "glibc")
