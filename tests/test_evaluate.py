"""Length-extrapolation evaluation: non-overlapping windows inside one document, ev multiples."""

import pytest

from conftest import tiny_spec, write_shards
from expe.errors import ConfigError, DataError
from expe.evaluation.extrapolation import evaluate, windows
from expe.data.shards import TokenShard
from expe.training.loop import train


@pytest.fixture
def model_dir(shards, tmp_path):
    train(tiny_spec(steps=6), shards, tmp_path / "m", tmp_path / "c", progress=False)
    return tmp_path / "m"


def test_windows_do_not_overlap_and_stay_inside_one_document(shards):
    shard = TokenShard(shards, "test")  # documents of 600 and 260 tokens
    w = windows(shard, 64, None)
    assert w == [(0, s) for s in range(0, 600 - 64, 64)] + [(1, s) for s in range(0, 260 - 64, 64)]
    for d, s in w:
        assert s + 64 + 1 <= shard.lengths[d]  # inputs and the shifted targets both inside the document


def test_max_tokens_keeps_an_evenly_spaced_subset(shards):
    shard = TokenShard(shards, "test")
    assert len(windows(shard, 16, 16 * 5)) == 5
    assert windows(shard, 16, 16 * 5)[0] == windows(shard, 16, None)[0]


def test_evaluation_reports_loss_counts_and_the_per_position_curve(model_dir, shards):
    r = evaluate(model_dir, shards, [1, 2, 4], progress=False)
    assert [x["ev"] for x in r["results"]] == [1, 2, 4] and r["train_length"] == 16
    for x in r["results"]:
        assert x["length"] == 16 * x["ev"]
        assert x["tokens"] == x["windows"] * x["length"]
        assert len(x["per_position"]) == x["length"]
        assert sum(x["per_position"]) / x["length"] == pytest.approx(x["loss"], abs=1e-4)


def test_an_ev_multiple_no_test_document_can_hold_is_a_one_line_error(model_dir, shards):
    with pytest.raises(DataError, match=r"no test document holds a window of 641 tokens \(longest has 600\)"):
        evaluate(model_dir, shards, [40], progress=False)


def test_inference_scale_changes_the_loss_but_not_the_weights(model_dir, shards):
    a = evaluate(model_dir, shards, [2], progress=False)
    b = evaluate(model_dir, shards, [2], pe_overrides={"scale": 0.5}, progress=False)
    assert b["pe"]["scale"] == 0.5 and a["results"][0]["loss"] != b["results"][0]["loss"]
    with pytest.raises(ConfigError, match="pe.interpolation: not an inference-time option of expe"):
        evaluate(model_dir, shards, [1], pe_overrides={"interpolation": 2}, progress=False)


def test_a_tokenizer_model_vocabulary_mismatch_is_named(model_dir, tmp_path):
    other = write_shards(tmp_path / "other", {"test": [list(range(200))]}, vocab=500)
    with pytest.raises(DataError, match="vocabulary mismatch: shards .* have 500 ids, model .* has 97"):
        evaluate(model_dir, other, [1], progress=False)
