"""Where results live (expe.workflow.Plan): every result inside the folder of the model it measures,
keyed by the hash of what determines it, so two configs never overwrite each other; and the layout
that results/README.md describes is the one the workflow builds."""

import copy
import re

from conftest import REPO
from expe import config as C
from expe.workflow import Plan, digest


def default_config(**changes):
    cfg = C.deep_merge(C.read_yaml(REPO / "config" / "config.yaml"), changes)
    return C.validate(copy.deepcopy(cfg))


def every_result(plan: Plan, recall: bool = True) -> list[str]:
    idx = plan.index()
    out = [f for m in idx["eval"].values() for s in m.values() for f in s.values()]
    out += [f for m in idx["benchmarks"].values() for s in m.values() for f in s.values()]
    out += plan.beyond_results()
    if recall:
        out += plan.recall_results() + plan.longer_results("copy", {"NoPE": [1]})
    return out


def test_every_result_sits_in_the_folder_of_the_model_it_measures():
    plan = Plan(default_config())
    for m, s in plan.runs(plan.models):
        d = plan.model_dir(m, s)
        for v in C.eval_variants(plan.config, m):
            assert plan.eval_result(m, s, v).startswith(d + "/eval/")
    for f in every_result(plan):
        model_dirs = {plan.model_dir(m, s) for m, s in plan.runs([*plan.all_models, *plan.recall_models])}
        assert any(f.startswith(d + "/") for d in model_dirs), f


def test_a_changed_tokenizer_changes_every_model_folder_and_result_path_so_nothing_is_overwritten():
    a, b = Plan(default_config()), Plan(default_config(tokenizer={"vocab_size": 1024}))
    assert a.run == b.run  # the same run_name ...
    assert not set(every_result(a, recall=False)) & set(every_result(b, recall=False))  # ... no result path in common
    assert not set(a.weights(a.models)) & set(b.weights(b.models))
    assert a.speed_file != b.speed_file  # the speed measurement names the model folders it timed
    assert a.recall_results() == b.recall_results()  # the recall task models read no corpus: nothing to redo


def test_evaluation_settings_change_the_result_path_but_not_the_model():
    a, b = Plan(default_config()), Plan(default_config(eval={"max_tokens": 4096}))
    assert a.weights(a.models) == b.weights(b.models)  # no retraining
    assert a.eval_result("expe", 1, "base") != b.eval_result("expe", 1, "base")
    assert a.bench_result("expe_m", 1, "base") == b.bench_result("expe_m", 1, "base")  # benchmarks untouched


def test_settings_that_never_change_the_weights_do_not_move_the_model():
    a = Plan(default_config())
    b = Plan(default_config(train={"log_every": 7, "checkpoint_every": 50, "trackers": ["tensorboard"]}))
    assert a.weights(a.models) == b.weights(b.models)


def test_the_speed_jobs_input_changes_only_with_what_it_measures():
    """The speed job reads its own settings file (not the whole config, which every key changes): a tracker,
    an evaluation setting or a new model outside the tables leave its input and its result as they are."""
    a = Plan(default_config())
    same = [Plan(default_config(train={"log_every": 7, "checkpoint_every": 50, "trackers": ["tensorboard"]})),
            Plan(default_config(eval={"max_tokens": 4096})),
            Plan(default_config(models={"extra": {"architecture": "cpu-small", "pe": {"name": "rope"}}}))]
    for b in same:
        assert b.config_file != a.config_file  # the whole config did change ...
        assert (b.speed_spec, b.speed_file) == (a.speed_spec, a.speed_file)  # ... what the speed job reads did not
    assert a.specs[a.speed_spec]["settings"] == a.config["speed"]
    assert list(a.specs[a.speed_spec]["models"]) == C.table_models(a.config)
    for b in (Plan(default_config(speed={"repeats": 3})),
              Plan(default_config(models={"expe": {"pe": {"name": "expe", "theta": 0.5}}}))):
        assert b.speed_spec != a.speed_spec and b.speed_file != a.speed_file


def test_each_job_settings_file_is_named_by_its_content():
    plan = Plan(default_config())
    for path, content in plan.specs.items():
        if "/specs/" in path:
            assert path.endswith(f"/{digest(content)}.json")  # unchanged settings: the same file, nothing reruns


def test_results_readme_describes_the_paths_the_workflow_builds():
    text = (REPO / "results" / "README.md").read_text()
    patterns = []
    for line in text.splitlines():
        m = re.match(r"^    (results/\S+)", line)
        if m:
            p = re.escape(m.group(1)).replace(r"<run>", "default")
            p = re.sub(r"<hash>", "[0-9a-f]{12}", p)
            p = re.sub(r"<[a-z]+>", r"[^/]+", p)
            patterns.append(re.compile(p + ("" if p.endswith("/") else "$")))
    plan = Plan(default_config())
    built = every_result(plan) + [plan.config_file, plan.index_file, plan.speed_file, plan.tokenizer, plan.bench_data,
                                  plan.heldout_task, f"{plan.shards}/train.bin", f"{plan.data}/data.json",
                                  plan.recall_index_file, plan.learned_file("copy")]
    built += [f"{d}/{f}" for d in (plan.model_dir(m, s) for m, s in plan.runs(plan.models))
              for f in ("spec.json", "model.safetensors")]
    built += [p for p in plan.specs if "/specs/" in p]
    built += [plan.checkpoints(plan.model_dir("expe", 1)) + "/step-00000200.pt"]
    for path in built:
        assert any(p.match(path) for p in patterns), f"{path} is not described in results/README.md"
    for p in patterns:  # and nothing the README lists is missing from what the workflow builds
        assert any(p.match(path) for path in built + [f"{plan.res}/tracking/"]), p.pattern


def test_our_heldout_task_is_built_once_in_the_data_folder_keyed_by_its_settings():
    a = Plan(default_config())
    b = Plan(default_config(benchmarks={"heldout": {"items": 100}}))
    assert a.heldout_task.startswith(f"{a.data}/tasks/") and a.heldout_task.endswith("/heldout_continuation.yaml")
    assert a.heldout_task != b.heldout_task and a.data == b.data  # new settings: a new task folder, same data
    assert a.weights(a.models) == b.weights(b.models) and a.eval_results(a.models) == b.eval_results(b.models)
    assert not set(a.bench_results()) & set(b.bench_results())  # every benchmark result follows its task
    folder = a.heldout_task.rsplit("/", 1)[0]
    assert all(a.specs[p]["heldout_task"] == folder for p in a.specs if "/specs/benchmark" in p)
    c = Plan(default_config(benchmarks={"batch_size": 4}))
    assert c.heldout_task == a.heldout_task  # how it is scored does not rebuild it


def test_without_our_task_in_the_list_nothing_of_it_is_planned_and_benchmark_paths_stay_as_before():
    tasks = ["hellaswag", "mmlu", "arc_challenge", "arc_easy"]
    plan = Plan(default_config(benchmarks={"tasks": tasks}))
    assert plan.heldout_task is None and not [p for p in plan.specs if "heldout" in p]
    assert "heldout_task" not in plan.bench_settings("base")
    assert plan.bench_result("expe_m", 1, "base").endswith(f"/{digest(plan.bench_settings('base'))}.json")
