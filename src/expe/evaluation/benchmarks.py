"""The benchmark step of the workflow: lm-evaluation-harness tasks (HellaSwag, MMLU, ARC-Challenge,
ARC-Easy; acc and acc_norm) on our checkpoints through `expe.evaluation.lm_eval_model.ExpeLM`. A task
whose data cannot be loaded is recorded as not run, with the reason; never a number.

Beside the paper's tasks runs our own, heldout_continuation ("held-out continuation choice",
`expe.evaluation.continuation_task`): built here from the held-out test shard (`build_heldout_task`),
it always runs offline. It is never one of the paper's benchmarks; its data is ours, so a failure to
load it is an error, not a "not run"."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from expe.data.sources import hub_reachable
from expe.errors import DataError, ExpeError
from expe.evaluation.task_names import OURS
from expe.io import write_json

log = logging.getLogger("expe.benchmarks")

NOT_RUN_OFFLINE = "not run: dataset unavailable offline"


def set_offline_if_unreachable() -> bool:
    """Put `datasets`/hub in offline mode *before* they are imported when the Hub is unreachable,
    so a missing dataset fails at once (a locally cached one still loads) instead of retrying."""
    online = hub_reachable()
    if not online:
        os.environ["HF_DATASETS_OFFLINE"] = "1"
        os.environ["HF_HUB_OFFLINE"] = "1"
    return online


def _metrics(task_results: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key in ("acc", "acc_norm"):
        if f"{key},none" in task_results:
            out[key] = task_results[f"{key},none"]
            stderr = task_results.get(f"{key}_stderr,none")
            out[f"{key}_stderr"] = stderr if isinstance(stderr, (int, float)) else None
    return out


def build_heldout_task(shards: str, tokenizer: str, out: str, settings: dict[str, Any]) -> Path:
    """heldout_continuation from the test split of a shards folder, decoded by the tokenizer:
    `<out>/heldout_continuation.{yaml,jsonl}`; returns the YAML's path. settings: benchmarks.heldout."""
    from expe.data.shards import TokenShard
    from expe.data.tokenizer import Tokenizer
    from expe.evaluation.continuation_task import ContinuationSettings, ContinuationTaskError, build_task

    test = TokenShard(shards, "test")
    tok = Tokenizer(tokenizer)
    try:
        st = ContinuationSettings.of({("n_items" if k == "items" else k): v for k, v in settings.items()})
        return build_task(out, [test.doc(i) for i in range(test.n_docs)], tok.decode, st)
    except ContinuationTaskError as e:
        raise DataError(f"benchmarks.heldout: {e} (test split of {shards}: {test.n_docs} documents, "
                        f"{int(test.lengths.sum())} tokens)") from None


def _include_paths(include_path: str | list[str] | None) -> list[str]:
    paths = [include_path] if isinstance(include_path, str) else list(include_path or [])
    for p in paths:
        if not Path(p).is_dir():
            raise ExpeError(f"benchmarks.include_path {p!r}: not a folder")
    return paths


def _task_manager(include_path: str | list[str] | None):
    """lm-eval's task registry plus the folders of include_path (one folder or a list)."""
    from lm_eval.tasks import TaskManager

    paths = _include_paths(include_path)
    return TaskManager(include_path=paths) if paths else TaskManager()


def _ours_missing(task: str, error: Exception | None = None) -> ExpeError:
    why = f" ({type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''})" if error else ""
    return ExpeError(f"{task}: our own task could not be loaded{why}; build it with `expe heldout-task` and give "
                     "its folder with --include-path (the workflow does both)")


def fetch_benchmark_data(tasks: list[str], out: str, include_path: str | list[str] | None = None) -> dict[str, Any]:
    """Load every task's dataset once, where the internet is (on a cluster: the submitting host):
    `datasets` keeps it in the Hugging Face cache, from which the benchmark jobs read offline.
    Records for each task whether its data is available."""
    online = set_offline_if_unreachable()
    tm = _task_manager(include_path)
    status = {}
    for task in tasks:
        if task not in tm.all_tasks:
            if task in OURS:
                raise _ours_missing(task)
            raise ExpeError(f"benchmarks.tasks: unknown lm-eval task {task!r}")
        try:
            tm.load([task])
            status[task] = "available"
        except Exception as e:
            if task in OURS:
                raise _ours_missing(task, e) from None
            status[task] = NOT_RUN_OFFLINE if not online else f"not run: dataset could not be loaded ({type(e).__name__})"
            log.warning("%s: %s", task, status[task])
    result = {"online": online, "tasks": status, "cache": os.environ.get("HF_DATASETS_CACHE") or "~/.cache/huggingface"}
    write_json(out, result, what="benchmark dataset check", kept="free space and rerun")
    return result


def run_benchmarks(model_dir: str, tokenizer: str, tasks: list[str], out: str, num_fewshot: int = 0,
                   limit: int | None = None, batch_size: int = 8, pe_overrides: dict | None = None,
                   include_path: str | list[str] | None = None, device: str = "auto", threads: int = 1,
                   availability: dict[str, str] | None = None) -> dict[str, Any]:
    """Run each task; a task whose data cannot be loaded is recorded as not run (never a number).
    availability: what `fetch_benchmark_data` found (tasks it could not load are not tried again)."""
    online = set_offline_if_unreachable()
    import torch

    from expe.runtime import set_threads

    set_threads(threads)
    import lm_eval

    from expe.evaluation.lm_eval_model import ExpeLM

    lm = ExpeLM(model_dir=model_dir, tokenizer=tokenizer, batch_size=batch_size, device=device, **(pe_overrides or {}))
    tm = _task_manager(include_path)
    result: dict[str, Any] = {
        "model_dir": str(model_dir),
        "pe": {**lm.model.cfg.pe, **(pe_overrides or {})},
        "num_fewshot": num_fewshot,
        "limit": limit,
        "lm_eval_version": lm_eval.__version__,
        "online": online,
        "tasks": {},
        "raw": {},
    }
    for task in tasks:
        t0 = time.time()
        known = (availability or {}).get(task)
        if known is not None and known != "available":
            result["tasks"][task] = {"status": "not run", "reason": known}
            continue
        try:
            tm.load([task])
        except Exception as e:  # the dataset (or the task itself) cannot be loaded
            if task in OURS:
                raise _ours_missing(task, e if task in tm.all_tasks else None) from None
            if task not in tm.all_tasks:
                raise ExpeError(f"benchmarks.tasks: unknown lm-eval task {task!r}") from None
            reason = NOT_RUN_OFFLINE if not online else f"not run: dataset could not be loaded ({type(e).__name__})"
            log.warning("%s: %s (%s: %s)", task, reason, type(e).__name__, str(e).splitlines()[0][:200] if str(e) else "")
            result["tasks"][task] = {"status": "not run", "reason": reason}
            continue
        res = lm_eval.simple_evaluate(model=lm, tasks=[task], num_fewshot=num_fewshot, limit=limit,
                                      task_manager=tm, log_samples=False, bootstrap_iters=1000)
        per = res["results"].get(task) or next(iter(res["results"].values()))
        n = res.get("n-samples", {})
        result["tasks"][task] = {"status": "ok", **_metrics(per), "seconds": round(time.time() - t0, 2),
                                 "n_samples": n.get(task, {}).get("effective") if isinstance(n, dict) else None}
        if task in OURS:  # its settings (from the task YAML's metadata) and the accuracy of a blind guess
            meta = (res.get("configs", {}).get(task) or {}).get("metadata") or {}
            result["tasks"][task].update(settings=meta, chance=1 / meta["choices"] if meta.get("choices") else None)
        result["raw"][task] = {"results": res["results"], "configs": {k: str(v) for k, v in res.get("configs", {}).items()}}
        log.info("%s: %s", task, result["tasks"][task])
    write_json(out, result, what="benchmark result", kept="the model and earlier results are kept; free space and rerun")
    return result
