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
