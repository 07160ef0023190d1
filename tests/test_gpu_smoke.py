"""config/gpu_smoke.yaml holds the paper's own shapes; a few steps of each of its models run on CPU
(the full run is for a GPU: see docs/performance.md)."""

import numpy as np
import pytest

import expe.config as C
from conftest import write_shards
from expe.evaluation.extrapolation import evaluate
from expe.training.loop import build_model, train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cfg():
    return C.load("config/gpu_smoke.yaml")


def test_the_gpu_smoke_models_have_the_papers_shapes(cfg):
    small, _ = build_model(C.model_spec(cfg, "expe"), 32000)
    s, _ = build_model(C.model_spec(cfg, "expe_s"), 32768)
    assert (small.cfg.d_model, small.cfg.n_layer, small.cfg.n_head, small.cfg.seq_len) == (384, 6, 12, 512)
    assert abs(small.param_counts()["total"] - 35e6) / 35e6 < 0.03  # with the paper's vocabulary
    assert (s.cfg.d_model, s.cfg.n_layer, s.cfg.n_head) == (768, 12, 12)
    assert abs(s.param_counts()["total"] - 135e6) / 135e6 < 0.03


@pytest.mark.parametrize("model", ["expe", "llama_s"])
def test_a_few_steps_of_the_gpu_smoke_models_run_on_cpu_and_evaluate_to_16x(cfg, model, tmp_path):
    vocab = cfg["tokenizer"]["vocab_size"]
    rng = np.random.default_rng(0)
    data = write_shards(tmp_path / "d", {"train": [rng.integers(0, vocab, 4000)], "dev": [rng.integers(0, vocab, 600)],
                                         "test": [rng.integers(0, vocab, 16 * 512 + 1)]}, vocab=vocab)
    spec = C.model_spec(cfg, model)
    spec["train"].update(steps=2, batch_size=1, log_every=1, checkpoint_every=2)
    r = train(spec, data, tmp_path / "m", tmp_path / "c", threads=2, progress=False)
    assert r["tokens"] == 2 * 512 and np.isfinite(r["final_train_loss"])
    e = evaluate(tmp_path / "m", data, [1, 16], max_tokens=512 * 16, batch_size=1, threads=2, progress=False)
    assert [x["length"] for x in e["results"]] == [512, 8192] and e["precision"] == "fp32"
