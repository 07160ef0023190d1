"""What the positional encodings do (METHOD.md), written as checks."""

import math

import pytest
import torch

from conftest import tiny_spec
from expe.nn.encodings import ExPE, ExQPE, alibi_slopes, build_encoding
from expe.nn.registry import REGISTRY
from expe.errors import ConfigError
from expe.nn.model import ModelConfig, Transformer

D, L = 64, 32


def cfg(pe, **kw):
    base = dict(vocab_size=97, seq_len=L, d_model=D, n_layer=2, n_head=4, dropout=0.0, arch="gpt")
    base.update(kw)
    return ModelConfig(**base, pe=pe)


def enc(name, **params):
    return build_encoding({"name": name, **params}, cfg({"name": name}))


# ---------------------------------------------------------------- ExPE / ExQPE values


def test_expe_values_are_S_plus_theta_n_in_every_one_of_the_l_dims():
    e = ExPE(D, L, S=1.0, theta=0.25, l=5)
    p = e.values(7, torch.device("cpu"))
    assert p.shape == (7, 5)
    for n in range(7):
        assert torch.equal(p[n], torch.full((5,), 1.0 + 0.25 * n))


def test_expe_defaults_are_S_1_theta_1_over_L_l_d_over_8():
    e = ExPE(D, L)
    assert (e.S, e.theta, e.l) == (1.0, 1 / L, D // 8)


def test_inference_scale_multiplies_theta_only():
    e = ExPE(D, L, S=2.0, theta=0.1, l=3, scale=0.5)
    assert torch.allclose(e.values(4, torch.device("cpu"))[:, 0], torch.tensor([2.0, 2.05, 2.1, 2.15]))


def test_exqpe_is_a_round_robin_counter():
    l, tq = 4, 0.5
    e = ExQPE(D, L, S_q=1.0, theta_q=tq, l=l)
    p = e.values(20, torch.device("cpu"))
    for n in range(20):
        for i in range(l):
            assert p[n, i].item() == pytest.approx(1.0 + tq * max(0, math.ceil((n - i) / l)))
    for n in range(1, 20):  # going n-1 -> n raises exactly one dim, (n-1) mod l, by theta_q
        diff = p[n] - p[n - 1]
        assert torch.count_nonzero(diff) == 1
        assert diff[(n - 1) % l].item() == pytest.approx(tq)
    assert torch.allclose(p.sum(1), l * 1.0 + tq * torch.arange(20.0))  # sum_i p_n[i] = l S + theta_q n


def test_exqpe_theta_defaults_to_l_over_L():
    assert ExQPE(D, L, l=8).theta == 8 / L


def test_exqpe_keeps_apart_in_bf16_positions_that_expe_merges_up_to_4x_training_length():
    d, train_len, T = 384, 512, 4 * 512  # the paper's small model: l = d/8 = 48
    cpu = torch.device("cpu")
    expe = ExPE(d, train_len).values(T, cpu).to(torch.bfloat16)
    exqpe = ExQPE(d, train_len).values(T, cpu).to(torch.bfloat16)
    assert len(torch.unique(expe, dim=0)) < T // 2  # ExPE: many positions collapse in bf16
    assert len(torch.unique(exqpe, dim=0)) == T  # ExQPE: every position stays distinct


# ---------------------------------------------------------------- where the overwrite happens


def _capture_block_inputs(model, x):
    """Record the (W_q/W_k input, W_v input) and the residual input of the first block."""
    seen = {}
    blk = model.blocks[0]
    blk.attn.wq.register_forward_hook(lambda m, i, o: seen.__setitem__("q_in", i[0].detach().clone()))
    blk.attn.wv.register_forward_hook(lambda m, i, o: seen.__setitem__("v_in", i[0].detach().clone()))
    blk.norm1.register_forward_hook(lambda m, i, o: seen.update(resid=i[0].detach().clone(), h=o.detach().clone()))
    model(x)
    return seen


@pytest.mark.parametrize("apply_to_value", [False, True])
def test_expe_overwrites_only_the_first_l_dims_of_the_qk_input(apply_to_value):
    torch.manual_seed(0)
    l = 6
    model = Transformer(cfg({"name": "expe", "l": l, "apply_to_value": apply_to_value})).eval()
    x = torch.randint(0, 97, (2, 10))
    seen = _capture_block_inputs(model, x)
    p = model.pe.values(10, torch.device("cpu"))
    assert torch.equal(seen["q_in"][..., :l], p.expand(2, 10, l))  # first l dims: the position
    assert torch.equal(seen["q_in"][..., l:], seen["h"][..., l:])  # the rest: the normed input, untouched
    if apply_to_value:
        assert torch.equal(seen["v_in"], seen["q_in"])
    else:
        assert torch.equal(seen["v_in"], seen["h"])  # value input untouched by default


def test_expe_leaves_the_residual_stream_untouched():
    torch.manual_seed(0)
    model = Transformer(cfg({"name": "expe"})).eval()
    x = torch.randint(0, 97, (1, 8))
    seen = _capture_block_inputs(model, x)
    # the residual entering block 0 is the plain token embedding: nothing written into it
    assert torch.equal(seen["resid"], model.tok_emb(x))


# ---------------------------------------------------------------- ablations: each differs in one way


def test_p_stable_overwrites_with_S_and_no_position():
    e = enc("expe_p_stable", S=1.5)
    p = e.values(9, torch.device("cpu"))
    assert torch.equal(p, torch.full((9, e.l), 1.5))
    assert e.l == enc("expe").l


def test_l1_overwrites_exactly_one_dim():
    e, base = enc("expe_l1"), enc("expe")
    assert e.l == 1
    assert (e.S, e.theta) == (base.S, base.theta)
    assert torch.equal(e.values(5, torch.device("cpu"))[:, 0], base.values(5, torch.device("cpu"))[:, 0])


def test_learned_init_starts_from_the_fixed_values_and_is_trainable():
    e, base = enc("expe_learned_init"), enc("expe")
    assert isinstance(e.S, torch.nn.Parameter) and isinstance(e.theta, torch.nn.Parameter)
    assert (e.S.item(), e.theta.item()) == pytest.approx((base.S, base.theta))


def test_learned_is_randomly_initialised():
    torch.manual_seed(0)
    e, base = enc("expe_learned"), enc("expe")
    assert isinstance(e.S, torch.nn.Parameter)
    assert (e.S.item(), e.theta.item()) != pytest.approx((base.S, base.theta))


def test_once_writes_into_the_embeddings_and_never_inside_blocks():
    torch.manual_seed(0)
    model = Transformer(cfg({"name": "expe_once"})).eval()
    x = torch.randint(0, 97, (1, 8))
    seen = _capture_block_inputs(model, x)
    l = model.pe.l
    p = model.pe.values(8, torch.device("cpu"))
    assert torch.equal(seen["resid"][0, :, :l], p)  # written once into the residual stream
    assert torch.equal(seen["resid"][0, :, l:], model.tok_emb(x)[0, :, l:])
    assert torch.equal(seen["q_in"], seen["h"])  # the blocks see the plain normed input


def test_once_positions_are_written_after_the_embedding_dropout_so_they_stay_exact_in_training():
    torch.manual_seed(0)
    model = Transformer(cfg({"name": "expe_once"}, dropout=0.5)).train()  # heavy dropout, training mode
    x = torch.randint(0, 97, (2, 8))
    seen = _capture_block_inputs(model, x)
    p = model.pe.values(8, torch.device("cpu"))
    assert torch.equal(seen["resid"][..., : model.pe.l], p.expand(2, 8, -1))  # never scaled or zeroed


@pytest.mark.parametrize("name", ["expe_learned_init", "expe_learned"])
def test_learned_variants_get_gradients_on_S_and_theta(name):
    torch.manual_seed(0)
    model = Transformer(cfg({"name": name}))
    x = torch.randint(0, 97, (2, 12))
    _, loss = model(x[:, :-1], x[:, 1:])
    loss.backward()
    assert model.pe.S.grad is not None and model.pe.S.grad.abs() > 0
    assert model.pe.theta.grad is not None and model.pe.theta.grad.abs() > 0


@pytest.mark.parametrize("name", ["expe", "exqpe", "expe_p_stable", "expe_l1", "expe_once", "rope", "sinusoidal",
                                  "alibi", "nope"])
def test_fixed_encodings_have_no_parameters(name):
    assert list(enc(name).parameters()) == []


# ---------------------------------------------------------------- baselines


def test_rope_scores_depend_only_on_relative_distance():
    torch.manual_seed(0)
    rope = enc("rope")
    q1, k1 = torch.randn(1, 1, 1, D // 4), torch.randn(1, 1, 1, D // 4)
    T = 40
    q = q1.expand(1, 1, T, -1).contiguous()
    k = k1.expand(1, 1, T, -1).contiguous()
    qr, kr = rope.rotate(q, k)
    scores = (qr @ kr.transpose(-1, -2))[0, 0]
    for delta in (0, 1, 5, 17):
        diag = torch.diagonal(scores, offset=-delta)  # score of query i with key i - delta
        assert torch.allclose(diag, diag[0].expand_as(diag), atol=1e-4)
    assert rope.base == 10000.0


def test_rope_interpolation_divides_positions():
    a, b = enc("rope"), enc("rope", interpolation=2.0)
    ca, _ = a.cos_sin(16, torch.device("cpu"))
    cb, _ = b.cos_sin(16, torch.device("cpu"))
    assert torch.allclose(cb[4], ca[2], atol=1e-6)


def test_rope_ntk_raises_the_base():
    e = enc("rope", ntk_factor=4.0)
    hd = D // 4
    cos, _ = e.cos_sin(3, torch.device("cpu"))
    expected = 10000.0 * 4.0 ** (hd / (hd - 2))
    assert cos[1, 1].item() == pytest.approx(math.cos(expected ** (-2 / hd)), rel=1e-5)


def test_alibi_slopes_power_of_two_and_the_12_head_rule():
    assert alibi_slopes(8) == pytest.approx([2 ** (-i) for i in range(1, 9)])
    s12 = alibi_slopes(12)  # 8 slopes of 8 heads, then every other slope of 16 heads
    s16 = [2 ** (-0.5 * i) for i in range(1, 17)]
    assert s12 == pytest.approx(alibi_slopes(8) + s16[0::2][:4])


def test_alibi_bias_is_minus_slope_times_distance_and_causal():
    e = enc("alibi")
    b = e.attn_bias(e.context(5, torch.device("cpu"), torch.float32))
    assert b.shape == (1, 4, 5, 5)  # 4-D: SDPA keeps its fused kernel
    m = alibi_slopes(4)
    assert b[0, 2, 4, 1].item() == pytest.approx(-m[2] * 3)
    assert b[0, 0, 1, 3].item() == float("-inf")


@pytest.mark.parametrize("name", ["alibi", "rope", "expe"])
def test_what_the_blocks_share_is_built_once_per_forward_not_once_per_layer(name, monkeypatch):
    model = Transformer(cfg({"name": name}, n_layer=4)).eval()
    calls = []
    original = type(model.pe).context
    monkeypatch.setattr(type(model.pe), "context", lambda self, *a: calls.append(a) or original(self, *a))
    with torch.no_grad():
        model(torch.randint(0, 97, (2, 20)))
    assert len(calls) == 1


def test_yarn_keeps_fast_dims_interpolates_slow_ones_and_scales_the_logits():
    hd = D // 4  # 16 dims per head, training length 32
    plain, yarn = enc("rope"), enc("rope", yarn_factor=4.0)
    f0, f1 = plain.inv_freq(torch.device("cpu")), yarn.inv_freq(torch.device("cpu"))
    assert f1[0] == pytest.approx(f0[0])  # turns many times within L: kept (extrapolated)
    assert f1[-1] == pytest.approx(f0[-1] / 4)  # turns less than once within L: interpolated by s
    assert ((f1 <= f0 + 1e-9) & (f1 >= f0 / 4 - 1e-9)).all()  # a ramp in between
    cos, sin = yarn.cos_sin(3, torch.device("cpu"))
    m = 0.1 * math.log(4.0) + 1
    assert cos[0, 0].item() == pytest.approx(m)  # the attention temperature on cos and sin: logits x m^2
    assert (cos**2 + sin**2).allclose(torch.full((3, hd), m * m))
    assert plain.cos_sin(3, torch.device("cpu"))[0][0, 0].item() == 1.0


def test_sinusoidal_adds_the_vaswani_table():
    e = enc("sinusoidal")
    out = e.embed(torch.zeros(1, 3, D))
    assert out[0, 2, 0].item() == pytest.approx(math.sin(2))
    assert out[0, 2, 1].item() == pytest.approx(math.cos(2))
    assert out[0, 2, 2].item() == pytest.approx(math.sin(2 / 10000 ** (2 / D)), rel=1e-5)


# ---------------------------------------------------------------- every encoding, as a model


@pytest.mark.parametrize("name", list(REGISTRY))
def test_no_encoding_leaks_the_future(name):
    torch.manual_seed(0)
    model = Transformer(cfg({"name": name})).eval()
    x = torch.randint(0, 97, (1, 16))
    t = 9
    y = x.clone()
    y[0, t + 1] = (y[0, t + 1] + 1) % 97  # change token t+1 only
    with torch.no_grad():
        a, b = model(x), model(y)
    assert torch.allclose(a[0, : t + 1], b[0, : t + 1], atol=1e-6)  # logits at <= t unchanged
    assert not torch.allclose(a[0, t + 1 :], b[0, t + 1 :])


@pytest.mark.parametrize("name", list(REGISTRY))
def test_any_length_runs_beyond_the_training_length(name):
    model = Transformer(cfg({"name": name})).eval()
    with torch.no_grad():
        out = model(torch.randint(0, 97, (1, 16 * L + 3)))
    assert out.shape == (1, 16 * L + 3, 97) and torch.isfinite(out).all()


def test_bad_encoding_options_are_one_line_errors_when_the_config_is_validated():
    from expe import config as C
    from expe.nn.registry import parse_overrides

    def validate(pe):
        C.validate({"models": {"m": {"architecture": "cpu-small", "pe": pe}}, "benchmarks": {"tasks": []}})

    with pytest.raises(ConfigError, match="unknown encoding 'foo'.*allowed: nope, sinusoidal"):
        enc("foo")
    with pytest.raises(ConfigError, match=r"models.m.pe.name: 'expee' is not allowed \(did you mean 'expe'\?\)"):
        validate({"name": "expee"})
    with pytest.raises(ConfigError, match=r"models.m.pe.l: must satisfy 0 < l <= d_model \(64\), got 65"):
        validate({"name": "expe", "l": 65})
    with pytest.raises(ConfigError, match="models.m.pe.l: must be >= 1"):
        validate({"name": "expe", "l": 0})
    with pytest.raises(ConfigError, match="models.m.pe.theta: not a parameter of rope"):
        validate({"name": "rope", "theta": 1.0})
    with pytest.raises(ConfigError, match="models.m.pe.yarn_factor: must be >= 1"):
        validate({"name": "rope", "yarn_factor": 0.5})
    with pytest.raises(ConfigError, match="pe.scale: not an inference-time option of rope"):
        parse_overrides("rope", {"scale": 0.5})


def test_alibi_attention_in_query_blocks_equals_the_full_computation():
    torch.manual_seed(0)
    model = Transformer(cfg({"name": "alibi"})).eval()
    x = torch.randint(0, 97, (1, 40))
    with torch.no_grad():
        full = model(x)
        for blk in model.blocks:
            blk.attn.BIAS_BLOCK = 8  # 40 tokens > 2 x 8: the blockwise path
        blocked = model(x)
    assert torch.allclose(full, blocked, atol=1e-5)


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_encoding_trains_several_steps_and_evaluates_beyond_L(name, shards, tmp_path):
    """Several steps, not one: an encoding that caches a tensor of the autograd graph between forwards
    (as an ALiBi-style cache would for a learned bias) fails on the second backward."""
    from expe.evaluation.extrapolation import evaluate
    from expe.training.loop import train

    spec = tiny_spec(pe={"name": name}, steps=4, checkpoint_every=4, log_every=2)
    r = train(spec, shards, tmp_path / "m", tmp_path / "c", progress=False)
    assert math.isfinite(r["final_train_loss"])
    out = evaluate(tmp_path / "m", shards, [1, 4], max_tokens=256, progress=False)
    assert [x["ev"] for x in out["results"]] == [1, 4] and all(math.isfinite(x["loss"]) for x in out["results"])


def test_dual_chunk_attention_is_plain_rope_within_its_chunk_and_bounds_every_distance_beyond():
    """DCA (An et al. 2024) at inference: with a chunk span c >= the window it is exactly RoPE's attention;
    at 4x L it runs with every query-key distance remapped into [0, c)."""
    torch.manual_seed(0)
    model = Transformer(cfg({"name": "rope"})).eval()
    x = torch.randint(0, 97, (1, L))
    with torch.no_grad():
        plain = model(x)
        model.pe.set_inference(dca_chunk=L + 8)
        dca = model(x)
        model.pe.set_inference(dca_chunk=L // 2)
        long = model(torch.randint(0, 97, (1, 4 * L)))
    assert torch.allclose(plain, dca, atol=1e-5)
    assert torch.isfinite(long).all()
    from expe.nn.dca import dca_positions

    pos = dca_positions(torch.arange(4 * L), L // 2)
    assert int(pos["inter"].max()) < L // 2 and int(pos["succ"].max()) < L // 2
