"""lm-evaluation-harness: our checkpoints as an lm-eval model, on local copies of the paper's tasks."""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import make_config, synthetic_docs, tiny_spec
from expe.evaluation.benchmarks import NOT_RUN_OFFLINE, run_benchmarks
from expe.evaluation.lm_eval_model import ExpeLM
from expe.data.prepare import prepare
from expe.data.tokenizer import build_tokenizer
from expe.runtime import load_trained
from expe.training.loop import train

FIXTURES = Path(__file__).parent / "fixtures" / "lm_eval"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny trained model and its sentencepiece tokenizer."""
    tmp = tmp_path_factory.mktemp("bench")
    cfg = make_config(tmp, synthetic_docs(30))
    build_tokenizer(cfg, tmp / "tok.model")
    prepare(cfg, tmp / "tok.model", tmp / "s", progress=False)
    train(tiny_spec(steps=20), tmp / "s", tmp / "m", tmp / "ck", progress=False)
    return tmp / "m", tmp / "tok.model"


@pytest.fixture(scope="module")
def local_tasks(tmp_path_factory):
    """Task YAMLs that `include:` the installed hellaswag, arc_easy and mmlu_anatomy configs and
    point them at hand-made documents of the same schema (no network)."""
    import lm_eval

    tasks = Path(lm_eval.__file__).parent / "tasks"
    d = tmp_path_factory.mktemp("tasks")
    specs = {
        "hellaswag": (tasks / "hellaswag" / "hellaswag.yaml", "validation_split: validation\ntraining_split: null\n"),
        "arc_easy": (tasks / "arc" / "arc_easy.yaml", "validation_split: null\ntraining_split: null\ntest_split: test\n"),
        "mmlu_anatomy": (tasks / "mmlu" / "default" / "mmlu_anatomy.yaml", "test_split: test\nfewshot_split: test\n"),
    }
    for name, (include, splits) in specs.items():
        split = "validation" if name == "hellaswag" else "test"
        (d / f"local_{name}.yaml").write_text(
            f"include: {include}\ntask: local_{name}\ntag: []\ndataset_path: json\ndataset_name: null\n"
            f"dataset_kwargs:\n  data_files:\n    {split}: {FIXTURES / (name + '.jsonl')}\n{splits}"
        )
    if (tasks / "hellaswag" / "utils.py").exists():  # `!function utils.process_docs` resolves beside the YAML
        (d / "utils.py").write_text((tasks / "hellaswag" / "utils.py").read_text())
    return d


def own_logprob(model, ids_ctx, ids_cont):
    x = torch.tensor([ids_ctx + ids_cont])
    with torch.no_grad():
        lp = F.log_softmax(model(x[:, :-1]).float(), -1)[0]
    targets = x[0, 1:]
    return lp[torch.arange(len(targets)), targets][-len(ids_cont):].sum().item()


def requests(lm, pairs):
    from lm_eval.api.instance import Instance

    return [Instance("loglikelihood", {}, p, i) for i, p in enumerate(pairs)]


def test_loglikelihood_equals_the_models_own_log_probabilities(trained):
    model_dir, tok = trained
    lm = ExpeLM(model_dir=str(model_dir), tokenizer=str(tok), batch_size=2, max_length=256)
    model = load_trained(model_dir)
    pairs = [("the king and the", " queen"), ("ghost blood", " honour love"), ("the storm", " night.")]
    got = lm.loglikelihood(requests(lm, pairs), disable_tqdm=True)
    for (ctx, cont), (score, greedy) in zip(pairs, got):
        ctx_ids, cont_ids = lm._encode_pair(ctx, cont)
        assert score == pytest.approx(own_logprob(model, ctx_ids, cont_ids), abs=1e-4)
        assert isinstance(greedy, bool)


def test_batch_size_does_not_change_results(trained):
    model_dir, tok = trained
    pairs = [("the king", " queen"), ("a", " crown of blood and storm"), ("love death fool heath", " storm"),
             ("x", " y"), ("the ghost of the castle at night", " sword")]
    out = {}
    for bs in (1, 3, 8):
        lm = ExpeLM(model_dir=str(model_dir), tokenizer=str(tok), batch_size=bs, max_length=256)
        out[bs] = [s for s, _ in lm.loglikelihood(requests(lm, pairs), disable_tqdm=True)]
    assert out[1] == pytest.approx(out[3], abs=1e-5) and out[1] == pytest.approx(out[8], abs=1e-5)


def test_a_context_longer_than_the_window_is_truncated_on_the_left_and_scored(trained):
    model_dir, tok = trained
    lm = ExpeLM(model_dir=str(model_dir), tokenizer=str(tok), max_length=16)
    ctx = " ".join(["the king and the queen"] * 20)
    (score, _), = lm.loglikelihood(requests(lm, [(ctx, " crown")]), disable_tqdm=True)
    ctx_ids, cont_ids = lm._encode_pair(ctx, " crown")
    assert len(ctx_ids) + len(cont_ids) > 17
    whole = (ctx_ids + cont_ids)[-17:]
    expected = own_logprob(load_trained(model_dir), whole[: -len(cont_ids)], cont_ids)
    assert math.isfinite(score) and score == pytest.approx(expected, abs=1e-4)


def test_rolling_loglikelihood_and_greedy_generation_run(trained):
    from lm_eval.api.instance import Instance

    model_dir, tok = trained
    lm = ExpeLM(model_dir=str(model_dir), tokenizer=str(tok), max_length=16, max_gen_toks=5)
    text = " ".join(["ghost blood honour"] * 15)
    (total,) = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)], disable_tqdm=True)
    assert total < 0 and math.isfinite(total)
    (gen,) = lm.generate_until([Instance("generate_until", {}, ("the king", {"until": ["\n\n"]}), 0)],
                               disable_tqdm=True)
    tok = lm.tok_encode(gen)
    assert 0 < len(tok) <= 5 and "\n\n" not in gen  # at most max_gen_toks tokens, cut at the stop string
    ctx = lm.tok_encode("the king")  # greedy: the first generated token is the argmax after the prompt
    assert tok[0] == int(lm._logprobs([ctx], [1])[0][-1].argmax())


def test_inference_scale_reaches_the_encoding(trained):
    model_dir, tok = trained
    lm = ExpeLM(model_dir=str(model_dir), tokenizer=str(tok), scale=0.5)
    assert lm.model.pe.scale == 0.5


def test_local_copies_of_hellaswag_arc_easy_and_mmlu_run_through_simple_evaluate(trained, local_tasks):
    import lm_eval
    from lm_eval.tasks import TaskManager

    model_dir, tok = trained
    lm = ExpeLM(model_dir=str(model_dir), tokenizer=str(tok), batch_size=4)
    tm = TaskManager(include_path=str(local_tasks), include_defaults=False)
    names = ["local_hellaswag", "local_arc_easy", "local_mmlu_anatomy"]
    res = lm_eval.simple_evaluate(model=lm, tasks=names, task_manager=tm, num_fewshot=0, bootstrap_iters=0)
    for name in names:
        r = res["results"][name]
        assert 0.0 <= r["acc,none"] <= 1.0
    assert res["n-samples"]["local_arc_easy"]["effective"] == 3


def test_run_benchmarks_writes_acc_and_stderr_for_local_tasks(trained, local_tasks, tmp_path):
    model_dir, tok = trained
    out = tmp_path / "bench.json"
    r = run_benchmarks(str(model_dir), str(tok), ["local_arc_easy"], str(out), include_path=str(local_tasks))
    t = r["tasks"]["local_arc_easy"]
    assert t["status"] == "ok" and 0 <= t["acc"] <= 1 and "acc_norm" in t and "acc_stderr" in t
    assert json.loads(out.read_text())["raw"]["local_arc_easy"]["results"]


def test_offline_benchmarks_are_recorded_as_not_run_never_a_number(trained, tmp_path):
    model_dir, tok = trained
    r = run_benchmarks(str(model_dir), str(tok), ["arc_easy", "hellaswag"], str(tmp_path / "b.json"))
    assert r["tasks"]["arc_easy"] == {"status": "not run", "reason": NOT_RUN_OFFLINE}
    assert r["tasks"]["hellaswag"]["reason"] == "not run: dataset unavailable offline"


def test_a_continuation_longer_than_the_window_is_scored_in_several_windows(trained):
    model_dir, tok = trained
    short = ExpeLM(model_dir=str(model_dir), tokenizer=str(tok), max_length=8)
    cont = " the king and the queen of the castle at night"
    (score, _), = short.loglikelihood(requests(short, [("ghost", cont)]), disable_tqdm=True)
    ctx_ids, cont_ids = short._encode_pair("ghost", cont)
    assert len(cont_ids) > 8
    model = load_trained(model_dir)
    expected = 0.0
    for inp, target in short._windows(ctx_ids, cont_ids):  # every continuation token scored once
        expected += own_logprob(model, inp[: len(inp) - len(target) + 1], target)
    assert sum(len(t) for _, t in short._windows(ctx_ids, cont_ids)) == len(cont_ids)
    assert score == pytest.approx(expected, abs=1e-4)


def test_lm_evals_own_command_line_runs_our_checkpoints_with_its_default_device(trained, local_tasks, tmp_path):
    """lm-eval's CLI passes device="cuda:0" unless told otherwise; without a GPU the CPU is used."""
    import subprocess
    import sys

    model_dir, tok = trained
    r = subprocess.run(
        [sys.executable, "-m", "expe.evaluation.lm_eval_cli", "run", "--model", "expe", "--model_args",
         f"model_dir={model_dir},tokenizer={tok}", "--batch_size", "4", "--tasks", "local_arc_easy",
         "--include_path", str(local_tasks), "--output_path", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "local_arc_easy" in r.stdout and "acc" in r.stdout


def test_requests_sharing_an_input_run_one_forward_and_only_scored_positions_reach_the_head(trained, monkeypatch):
    model_dir, tok = trained
    lm = ExpeLM(model_dir=str(model_dir), tokenizer=str(tok), batch_size=16, max_length=256)
    ctx = "the king and the queen of the castle. Answer:"
    words = ["the", "e", ".", "a", "n", "k", "g", "i"]
    choices = [w for w in words if len(lm._encode_pair(ctx, w)[1]) == 1][:4]
    assert len(choices) == 4
    pairs = [(ctx, w) for w in choices]  # MMLU-shaped: four one-token choices after one context
    rows, head_rows = [], []
    forward = lm.model.hidden_states
    head = lm.model.lm_head.forward
    monkeypatch.setattr(lm.model, "hidden_states", lambda x: rows.append(x.shape[0]) or forward(x))
    monkeypatch.setattr(lm.model.lm_head, "forward", lambda h: head_rows.append(h.shape[0]) or head(h))
    got = lm.loglikelihood(requests(lm, pairs), disable_tqdm=True)
    assert rows == [1] and head_rows == [1]  # one forward of one sequence, the head at one position
    model = load_trained(model_dir)
    for (c, t), (score, _) in zip(pairs, got):
        ids_ctx, ids_cont = lm._encode_pair(c, t)
        assert score == pytest.approx(own_logprob(model, ids_ctx, ids_cont), abs=1e-4)


def test_bad_model_args_are_one_line_errors(trained):
    from expe.errors import ConfigError, ExpeError

    model_dir, tok = trained
    with pytest.raises(ConfigError, match="pe.scale: must be > 0, got 0"):
        ExpeLM(model_dir=str(model_dir), tokenizer=str(tok), scale=0)
    with pytest.raises(ExpeError, match="pe.scale: must be a number, got 'x'"):
        ExpeLM(model_dir=str(model_dir), tokenizer=str(tok), scale="x")


def test_benchmark_data_records_unavailable_tasks_and_scoring_skips_them(trained, tmp_path):
    from expe.evaluation.benchmarks import fetch_benchmark_data

    model_dir, tok = trained
    avail = fetch_benchmark_data(["arc_easy"], str(tmp_path / "avail.json"))
    assert avail["tasks"] == {"arc_easy": NOT_RUN_OFFLINE}
    r = run_benchmarks(str(model_dir), str(tok), ["arc_easy"], str(tmp_path / "b.json"), availability=avail["tasks"])
    assert r["tasks"]["arc_easy"] == {"status": "not run", "reason": NOT_RUN_OFFLINE}
