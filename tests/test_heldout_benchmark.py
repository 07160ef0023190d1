"""heldout_continuation through the workflow's own steps: built from a shards folder's test split and
its tokenizer (`expe heldout-task`), scored by the benchmark step (`run_benchmarks`, lm-eval inside),
and reported by the benchmarks table, whose cell is lm-eval's own accuracy for that model."""

import json

import pytest

from conftest import make_config, synthetic_docs, tiny_spec
from expe.cli import main
from expe.data.prepare import prepare
from expe.data.shards import TokenShard
from expe.data.tokenizer import Tokenizer, build_tokenizer
from expe.errors import DataError, ExpeError
from expe.evaluation.benchmarks import NOT_RUN_OFFLINE, build_heldout_task, fetch_benchmark_data, run_benchmarks
from expe.evaluation.continuation_task import DATA_FILE, TASK_NAME, YAML_FILE
from expe.report import stats
from expe.report.render import Est
from expe.report.results import Results
from expe.report.tables import HELDOUT_COLUMN, benchmark_table
from expe.training.loop import train

SETTINGS = {"items": 100, "context_tokens": 8, "continuation_tokens": 4, "choices": 4, "seed": 0}  # 8 + 4 <= L = 16
SEEDS = (1, 2)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A corpus, its tokenizer and shards, and our task built from the test split."""
    tmp = tmp_path_factory.mktemp("heldout")
    cfg = make_config(tmp, synthetic_docs(30))
    build_tokenizer(cfg, tmp / "tok.model")
    prepare(cfg, tmp / "tok.model", tmp / "shards", progress=False)
    yaml_path = build_heldout_task(str(tmp / "shards"), str(tmp / "tok.model"), str(tmp / "task"), SETTINGS)
    return tmp, yaml_path


@pytest.fixture(scope="module")
def trained(data):
    """One tiny model per seed, each scored by the benchmark step on our task and an offline paper task."""
    tmp, yaml_path = data
    out = {}
    for seed in SEEDS:
        spec = {**tiny_spec(steps=20), "seed": seed}
        model = tmp / "models" / f"s{seed}"
        train(spec, tmp / "shards", model, tmp / "ck" / f"s{seed}", progress=False)
        rel = f"models/s{seed}/benchmarks/base.json"
        run_benchmarks(str(model), str(tmp / "tok.model"), [TASK_NAME, "arc_easy"], str(tmp / rel),
                       include_path=[str(yaml_path.parent)])
        out[seed] = (model, rel)
    return out


def lm_evals_own(model_dir, tokenizer, task_dir) -> dict:
    """lm-eval run directly on the model: no code of the benchmark step in between."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from expe.evaluation.lm_eval_model import ExpeLM

    lm = ExpeLM(model_dir=str(model_dir), tokenizer=str(tokenizer))
    tm = TaskManager(include_path=str(task_dir), include_defaults=False)
    res = lm_eval.simple_evaluate(model=lm, tasks=[TASK_NAME], task_manager=tm, num_fewshot=0, bootstrap_iters=0)
    assert res["n-samples"][TASK_NAME]["effective"] == SETTINGS["items"]
    return res["results"][TASK_NAME]


def test_the_task_built_from_the_test_shard_is_the_tokenizers_text_of_the_test_documents(data):
    tmp, yaml_path = data
    assert sorted(p.name for p in yaml_path.parent.iterdir()) == [DATA_FILE, YAML_FILE]
    tok, test = Tokenizer(tmp / "tok.model"), TokenShard(tmp / "shards", "test")
    items = [json.loads(line) for line in (yaml_path.parent / DATA_FILE).read_text().splitlines()]
    k, m = SETTINGS["context_tokens"], SETTINGS["continuation_tokens"]
    assert len(items) == SETTINGS["items"]
    for it in items:
        doc = test.doc(it["doc"])
        assert it["context"] + it["choices"][it["label"]] == tok.decode(doc[it["start"] : it["start"] + k + m])
        assert len(it["choices"]) == SETTINGS["choices"] and len(set(it["choices"])) == SETTINGS["choices"]


def test_the_command_line_writes_the_same_task_as_the_function(data, tmp_path):
    tmp, yaml_path = data
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SETTINGS))
    assert main(["heldout-task", "--spec-file", str(spec), "--data", str(tmp / "shards"),
                 "--tokenizer", str(tmp / "tok.model"), "--out", str(tmp_path / "task")]) == 0
    assert (tmp_path / "task" / DATA_FILE).read_bytes() == (yaml_path.parent / DATA_FILE).read_bytes()


def test_a_test_split_too_small_for_the_settings_is_a_one_line_data_error(data, tmp_path):
    tmp, _ = data
    with pytest.raises(DataError, match=r"benchmarks.heldout: .*no held-out document has 100016 tokens.*test split of"):
        build_heldout_task(str(tmp / "shards"), str(tmp / "tok.model"), str(tmp_path / "t"),
                           {**SETTINGS, "context_tokens": 100000, "continuation_tokens": 16})
    assert not (tmp_path / "t" / YAML_FILE).exists()


@pytest.mark.slow
def test_our_task_missing_from_the_include_path_is_an_error_not_a_not_run(tmp_path):
    """The paper's tasks are "not run" offline; ours is built locally, so its absence is a mistake."""
    with pytest.raises(ExpeError, match="heldout_continuation: our own task could not be loaded.*expe heldout-task"):
        fetch_benchmark_data([TASK_NAME], str(tmp_path / "avail.json"))


@pytest.mark.slow
def test_the_benchmark_data_step_finds_our_task_available_offline_beside_unavailable_paper_tasks(data, tmp_path):
    _, yaml_path = data
    r = fetch_benchmark_data(["arc_easy", TASK_NAME], str(tmp_path / "avail.json"), include_path=[str(yaml_path.parent)])
    assert r["tasks"] == {"arc_easy": NOT_RUN_OFFLINE, TASK_NAME: "available"}


@pytest.mark.slow
def test_the_benchmark_result_has_our_tasks_accuracy_settings_and_chance_and_the_paper_task_not_run(data, trained):
    tmp, _ = data
    for seed, (_, rel) in trained.items():
        t = json.loads((tmp / rel).read_text())["tasks"]
        assert t["arc_easy"] == {"status": "not run", "reason": NOT_RUN_OFFLINE}
        ours = t[TASK_NAME]
        assert ours["status"] == "ok" and 0 <= ours["acc"] <= 1 and 0 <= ours["acc_norm"] <= 1
        assert ours["n_samples"] == SETTINGS["items"] and ours["chance"] == 0.25
        assert ours["settings"]["n_items"] == SETTINGS["items"]


@pytest.mark.slow
def test_the_table_cell_is_lm_evals_own_accuracy_for_that_model_mean_over_seeds(data, trained):
    tmp, yaml_path = data
    index = {"models": {"tiny": {str(s): str(trained[s][0].relative_to(tmp)) for s in SEEDS}}, "eval": {},
             "benchmarks": {"tiny": {str(s): {"base": trained[s][1]} for s in SEEDS}}}
    table = benchmark_table({"Tiny": "tiny"}, ["arc_easy", TASK_NAME], Results(index, root=tmp), "caption", SETTINGS)
    row = dict(zip(table.columns, table.rows[0]))
    own = [lm_evals_own(trained[s][0], tmp / "tok.model", yaml_path.parent) for s in SEEDS]
    for metric in ("acc", "acc_norm"):
        cell = row[f"{HELDOUT_COLUMN} {metric}"]
        expected = stats.t_interval([r[f"{metric},none"] for r in own])
        assert isinstance(cell, Est) and cell.n == len(SEEDS)
        assert cell.mean == pytest.approx(expected.mean, abs=1e-12) and cell.half == pytest.approx(expected.half)
    assert row[f"{HELDOUT_COLUMN} chance"] == 0.25
    assert row["ARC-Easy acc"] == NOT_RUN_OFFLINE
    assert not any(c.startswith(HELDOUT_COLUMN) and "paper" in c for c in table.columns)
    assert any("not one of the paper's benchmarks" in n for n in table.notes)
    assert own[0]["acc,none"] != own[1]["acc,none"]  # two models, two numbers: the mean and interval are tested


@pytest.mark.slow
def test_the_benchmark_command_runs_a_users_include_path_beside_our_task(data, trained, tmp_path):
    """The workflow's job settings: benchmarks.include_path (the user's folder) and our task's folder."""
    tmp, yaml_path = data
    user = tmp_path / "my_tasks"  # a user's own task: the same items under another name
    user.mkdir()
    (user / "my_task.yaml").write_text(yaml_path.read_text().replace(f"task: {TASK_NAME}\n", "task: my_task\n"))
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"tasks": ["my_task", TASK_NAME], "num_fewshot": 0, "limit": 20, "batch_size": 8,
                                "pe": {}, "include_path": str(user), "heldout_task": str(yaml_path.parent)}))
    out = tmp_path / "b.json"
    assert main(["benchmark", "--model-dir", str(trained[1][0]), "--tokenizer", str(tmp / "tok.model"),
                 "--spec-file", str(spec), "--out", str(out)]) == 0
    t = json.loads(out.read_text())["tasks"]
    assert t["my_task"]["status"] == t[TASK_NAME]["status"] == "ok"
    assert t["my_task"]["acc"] == t[TASK_NAME]["acc"] and t[TASK_NAME]["n_samples"] == 20
