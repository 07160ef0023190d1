"""Where everything of one validated config lives: the paths and job settings the Snakemake workflow
uses (`workflow/rules/common.smk` builds one `Plan`). Torch-free and unit-tested.

Every result sits under a path keyed by the hash of what determines it, so a config change means new
paths, never changed files under old ones: exactly the affected jobs rerun, earlier results are kept,
and going back to an earlier config is "Nothing to be done".

    results/<run>/data/<hash of seed, data, tokenizer keys>/    data.json, tokenizer/, shards/
    results/<run>/models/<model>/<hash of the spec and data>/   spec.json, model.safetensors, config.json, metrics.jsonl
        eval/<hash of the evaluation settings and variant>.json
        probes/<hash of the probe settings>/{retrieval,passkey}.json
        recall/<hash of the recall evaluation settings>.json        (task models: accuracy per grid cell)
        precision/<hash of the precision settings>/<dtype>.json
        benchmarks/<hash of the benchmark settings and variant>.json
    results/<run>/data/<hash>/tasks/<hash of benchmarks.heldout>/  heldout_continuation.{yaml,jsonl}: our lm-eval task
    results/<run>/checkpoints/<model>/<same hash>/               step-*.pt (+ .sha256), metrics.jsonl, train.log
    results/<run>/specs/<kind>/<hash>.json                       the settings each job reads (--spec-file)
    results/<run>/benchmarks/data/<hash>.json                    which lm-eval tasks could be loaded
    results/<run>/speed/<hash of the settings and model folders>.json     (its input: specs/speed/<hash>.json)
    results/<run>/recall/<task>/learned-<hash>.json             which seeds learned the task (decides the longer runs)
    results/<run>/config/<hash>.json, index/<hash>.json          the resolved config; where every result is
"""

from __future__ import annotations

import hashlib
from typing import Any

from expe import config as C
from expe.evaluation.continuation_task import TASK_NAME as HELDOUT, YAML_FILE as HELDOUT_YAML
from expe.report import catalog


def digest(obj: Any) -> str:
    """The 12-hex-digit key of a path: sha256 of the canonical JSON of what determines it."""
    return hashlib.sha256(C.dumps(obj).encode()).hexdigest()[:12]


# Snakemake's default for --max-jobs-per-timespan: (jobs, seconds)
SNAKEMAKE_DEFAULT_JOB_RATE = (100, 1)


def drop_default_job_rate_limit(workflow) -> bool:
    """Run Snakemake's scheduler without its default job rate limit (--max-jobs-per-timespan 100/1s).

    With the limit, Snakemake 9 (9.27.1 here) starts a `threading.Timer(1 s)` after every scheduling
    round in which a ready job waits, and each timer, when it fires, runs another round, which starts
    the next timer. Every finished job adds such a round, so while jobs wait for cores the timers pile
    up: after N jobs, N rounds a second, each evaluating every ready job and the sizes of their inputs.
    In the default run on 2 cores the Snakemake process took about half a core from the jobs
    (bench/snakemake_overhead.py measures it). The limit throttles nothing this workflow needs: local
    runs are bounded by --cores, cluster runs by `jobs:`. A limit the user sets (any value but 100/1s)
    is kept. Called from `onstart:`, the first moment the scheduler exists and before it selects a
    job (the settings are read when it is built, after the Snakefile). Returns whether it was dropped."""
    scheduler = getattr(workflow, "scheduler", None)
    limiter = getattr(scheduler, "job_rate_limiter", None)
    if limiter is None or (limiter.max_jobs, limiter.timespan) != SNAKEMAKE_DEFAULT_JOB_RATE:
        return False
    scheduler.job_rate_limiter = None
    return True


class Plan:
    """Paths, job settings and targets of one validated config."""

    def __init__(self, config: dict[str, Any], root: str = "results"):
        self.config = config
        self.run = config["run_name"]
        self.res = f"{root}/{self.run}"
        self.logs = f"logs/{self.run}"
        self.bench = f"benchmarks/{self.run}"  # Snakemake `benchmark:` files (per-job wall times)
        self.tables = "paper_tables" if self.run == "default" else f"paper_tables/{self.run}"
        self.beyond = f"{self.tables}/beyond"
        self.data_keys = {k: config[k] for k in C.DATA_KEYS}
        self.data = f"{self.res}/data/{digest(self.data_keys)}"
        self.shards = f"{self.data}/shards"
        self.tokenizer = f"{self.data}/tokenizer/tokenizer.model"
        self.models = list(config["models"])
        self.all_models = list(C.model_entries(config))  # + the bf16-trained and copy-augmented copies
        self.recall_models = C.recall_models(config)  # the recall study's task models: name -> task, label, ...
        self.config_file = f"{self.res}/config/{digest(config)}.json"
        self.specs: dict[str, dict[str, Any]] = {f"{self.data}/data.json": C.resolved_document(self.data_keys)}
        self._dirs: dict[tuple[str, int], str] = {}  # (model, seed) -> its folder
        self._by_dir: dict[str, dict[str, Any]] = {}
        for m in self.all_models:
            for s in self.seeds(m):
                spec = C.model_spec(config, m, s)
                d = f"{self.res}/models/{m}/{digest([C.spec_identity(spec), self.data])}"
                self._dirs[(m, s)] = d
                self._by_dir[d] = spec
        for m in self.recall_models:  # task models: no corpus, so their folders skip the data hash
            for s in self.seeds(m):
                spec = C.recall_spec(config, m, s)
                d = f"{self.res}/models/{m}/{digest(C.spec_identity(spec))}"
                self._dirs[(m, s)] = d
                self._by_dir[d] = spec
        self.recall_tables = f"{self.tables}/recall"
        for v in {v for m in self.models for v in C.eval_variants(config, m)}:  # every job's settings file
            self._spec("eval", self.eval_settings(v))
        for m, v in self.bench_refs():
            self._spec("benchmark", self.bench_settings(v))
        self._spec("probes", self.probe_settings())
        self.speed_spec = self._spec("speed", self.speed_settings())  # the speed job's input, by content
        if self.recall_models:
            self._spec("recall_eval", self.recall_eval_settings())
        self._spec("precision", self.precision_settings())
        b = config["benchmarks"]
        self.bench_data_spec = self._spec("benchmark_data", {**{k: b[k] for k in ("tasks", "include_path")},
                                                             **self._heldout_ref()})
        if self.heldout_task:
            self._spec("heldout_task", self.heldout_settings())

    # ------------------------------------------------------------------ models
    def seeds(self, model: str) -> list[int]:
        if model in self.recall_models:
            return list(self.config["recall"]["seeds"])
        return C.seeds(self.config, model)

    def is_task(self, model: str) -> bool:
        """A recall task model: trained on its generator, no corpus."""
        return model in self.recall_models

    def runs(self, models) -> list[tuple[str, int]]:
        """(model, seed) of every training run of these model entries."""
        return [(m, s) for m in models for s in self.seeds(m)]

    def model_dir(self, model: str, seed: int) -> str:
        return self._dirs[(model, int(seed))]

    def spec_of_dir(self, model_dir: str) -> dict[str, Any]:
        """The spec whose folder this is (the `model_spec` rule writes it there)."""
        return self._by_dir[model_dir]

    def checkpoints(self, model_dir: str) -> str:
        return model_dir.replace(f"{self.res}/models/", f"{self.res}/checkpoints/", 1)

    def weights(self, models) -> list[str]:
        return [f"{self.model_dir(m, s)}/model.safetensors" for m, s in self.runs(models)]

    # ------------------------------------------------------------------ job settings (spec files)
    def _spec(self, kind: str, content: dict[str, Any]) -> str:
        path = f"{self.res}/specs/{kind}/{digest(content)}.json"
        self.specs[path] = content
        return path

    def eval_settings(self, variant: str) -> dict[str, Any]:
        ev = self.config["eval"]
        return {"variant": variant, "pe": C.variant_pe(self.config, variant), "multiples": ev["multiples"],
                "max_tokens": ev["max_tokens"], "batch_size": ev["batch_size"], "split": ev["split"],
                "precision": C.variant_precision(self.config, variant),
                "sliding": ev["sliding"] if ev["sliding"]["multiples"] else None}

    def eval_result(self, model: str, seed: int, variant: str) -> str:
        return f"{self.model_dir(model, seed)}/eval/{digest(self.eval_settings(variant))}.json"

    def eval_results(self, models) -> list[str]:
        return [self.eval_result(m, s, v) for m, s in self.runs(models) for v in C.eval_variants(self.config, m)]

    def probe_settings(self) -> dict[str, Any]:
        b = self.config["beyond"]
        return {"split": self.config["eval"]["split"], "retrieval": b["retrieval"], "passkey": b["passkey"]}

    def probe_results(self, model: str, seed: int) -> dict[str, str]:
        d = f"{self.model_dir(model, seed)}/probes/{digest(self.probe_settings())}"
        return {p: f"{d}/{p}.json" for p in ("retrieval", "passkey")}

    def precision_settings(self) -> dict[str, Any]:
        p, ev = self.config["beyond"]["precision"], self.config["eval"]
        return {"variant": "base", "pe": {}, "precisions": p["precisions"], "multiples": p["multiples"],
                "max_tokens": p["max_tokens"], "batch_size": ev["batch_size"], "split": ev["split"]}

    def precision_results(self, model: str, seed: int) -> dict[str, str]:
        d = f"{self.model_dir(model, seed)}/precision/{digest(self.precision_settings())}"
        return {p: f"{d}/{p}.json" for p in self.config["beyond"]["precision"]["precisions"]}

    def bench_settings(self, variant: str) -> dict[str, Any]:
        b = self.config["benchmarks"]
        return {"variant": variant, "pe": C.variant_pe(self.config, variant),
                **{k: b[k] for k in ("tasks", "num_fewshot", "limit", "batch_size", "include_path")},
                **self._heldout_ref()}

    def heldout_settings(self) -> dict[str, Any] | None:
        """Settings of our own task heldout_continuation (None when benchmarks.tasks does not list it)."""
        b = self.config["benchmarks"]
        return dict(b["heldout"]) if HELDOUT in b["tasks"] else None

    @property
    def heldout_task(self) -> str | None:
        """Its task YAML (beside the .jsonl of items): built once per data folder and settings from the
        test shard and the tokenizer; the benchmark jobs add its folder to lm-eval's include path."""
        s = self.heldout_settings()
        return f"{self.data}/tasks/{digest(s)}/{HELDOUT_YAML}" if s is not None else None

    def _heldout_ref(self) -> dict[str, str]:
        """What a benchmark job's settings add for our task: its folder (so its result path changes with it)."""
        return {"heldout_task": self.heldout_task.rsplit("/", 1)[0]} if self.heldout_task else {}

    def bench_result(self, model: str, seed: int, variant: str) -> str:
        return f"{self.model_dir(model, seed)}/benchmarks/{digest(self.bench_settings(variant))}.json"

    def bench_refs(self) -> list[tuple[str, str]]:
        return sorted({C.parse_ref(r) for r in self.config["tables"]["benchmarks"].values()})

    def bench_results(self) -> list[str]:
        return [self.bench_result(m, s, v) for m, v in self.bench_refs() for s in self.seeds(m)]

    @property
    def bench_data(self) -> str:
        """Which tasks' datasets could be loaded (from the settings file `bench_data_spec`)."""
        return f"{self.res}/benchmarks/data/{self.bench_data_spec.rsplit('/', 1)[1]}"

    @property
    def speed_file(self) -> str:
        models = C.table_models(self.config)
        dirs = [self.model_dir(m, self.seeds(m)[0]) for m in models]
        return f"{self.res}/speed/{digest([self.config['speed'], dirs])}.json"

    def speed_settings(self) -> dict[str, Any]:
        """What the `speed` job reads: its settings and, per table model, what determines the model (the
        spec without the keys that never change the weights), so turning on a tracker or changing any
        other key leaves this file, and the measurement named by it, as they are."""
        return {"settings": self.config["speed"],
                "models": {m: {"name": m, **C.spec_identity(C.model_spec(self.config, m))}
                           for m in C.table_models(self.config)}}

    # ------------------------------------------------------------------ the recall study
    def recall_eval_settings(self) -> dict[str, Any]:
        r = self.config["recall"]
        return {k: r[k] for k in ("multiples", "trials", "in_distribution_trials", "batch_size")}

    def recall_result(self, model: str, seed: int) -> str:
        return f"{self.model_dir(model, seed)}/recall/{digest(self.recall_eval_settings())}.json"

    def recall_runs(self, task: str, longer: bool = False) -> dict[str, str]:
        """Encoding label -> task model name, for one task (the first runs, or the longer ones)."""
        return {v["label"]: m for m, v in self.recall_models.items() if v["task"] == task and v["longer"] == longer}

    def recall_results(self, task: str | None = None) -> list[str]:
        """Results of the first runs (the longer ones are decided by `learned_file`)."""
        tasks = [task] if task else list(self.config["recall"]["tasks"])
        return [self.recall_result(m, s) for t in tasks for m in self.recall_runs(t).values() for s in self.seeds(m)]

    def learned_hash(self, task: str) -> str:
        """The key of `learned_file`: the threshold and the results it reads."""
        return digest([self.config["recall"]["threshold"], self.recall_results(task)])

    def learned_file(self, task: str) -> str:
        """Which (encoding, seed) learned `task` inside L."""
        return f"{self.res}/recall/{task}/learned-{self.learned_hash(task)}.json"

    def longer_results(self, task: str, below: dict[str, list[int]]) -> list[str]:
        """The longer runs' results for the seeds below the threshold (label -> seeds, from `learned_file`)."""
        runs, n = self.recall_runs(task, longer=True), self.config["recall"]["longer"]["max_seeds"]
        return [self.recall_result(runs[label], s) for label, seeds in below.items() if label in runs
                for s in seeds[:n]]

    def recall_lms(self) -> list[str]:
        """The language models of the copy-augmented comparison: each plain entry and its _copyaug copy."""
        return [x for m in C.augmented_models(self.config) for x in (m, m + C.AUG_SUFFIX)]

    def recall_lm_results(self) -> list[str]:
        lms = self.recall_lms()
        return ([self.eval_result(m, s, "base") for m, s in self.runs(lms)]
                + [f for m, s in self.runs(lms) for f in self.probe_results(m, s).values()])

    def recall_index(self) -> dict[str, Any]:
        """Where every result of the recall study lives (what its tables read); Results reads it like `index`."""
        lms = self.recall_lms()
        rec = self.config["recall"]
        return {
            "run_name": self.run,
            "config_file": self.config_file,
            "models": {m: {str(s): self.model_dir(m, s) for s in self.seeds(m)} for m in [*self.recall_models, *lms]},
            "eval": {m: {str(s): {"base": self.eval_result(m, s, "base")} for s in self.seeds(m)} for m in lms},
            "beyond": {p: {m: {str(s): self.probe_results(m, s)[p] for s in self.seeds(m)} for m in lms}
                       for p in ("retrieval", "passkey")},
            "recall": {t: {"learned": self.learned_file(t),
                           "runs": {run: {label: {"model": m, "seeds": {str(s): self.recall_result(m, s) for s in self.seeds(m)}}
                                          for label, m in self.recall_runs(t, run == "longer").items()}
                                    for run in ("first", "longer")}}
                       for t in rec["tasks"]},
        }

    @property
    def recall_index_file(self) -> str:
        return f"{self.res}/index/recall-{digest(self.recall_index())}.json"

    def recall_files(self) -> list[str]:
        r = self.recall_tables
        return ([f"{r}/{t}.{ext}" for t in catalog.recall_tables(self.config) for ext in ("md", "tex", "csv")]
                + [f"{r}/{f}" for f in ("README.md", "summary.md", "data/recall.csv", "data/recall_cells.csv",
                                                      "data/augmented.csv")]
                + [f"{r}/plots/{p}.{ext}" for p in catalog.recall_plots(self.config) for ext in ("png", "pdf")])

    # ------------------------------------------------------------------ the results index and targets
    def index(self) -> dict[str, Any]:
        """Where every result of this config lives: what the tables and plots read (a cell traces to a file)."""
        cfg = self.config
        idx: dict[str, Any] = {
            "run_name": self.run,
            "config_file": self.config_file,
            "data": f"{self.shards}/manifest.json",
            "speed": self.speed_file,
            "models": {m: {str(s): self.model_dir(m, s) for s in self.seeds(m)} for m in self.all_models
                       if not m.endswith(C.AUG_SUFFIX)},  # the recall study's own index has those
            "eval": {m: {str(s): {v: self.eval_result(m, s, v) for v in C.eval_variants(cfg, m)} for s in self.seeds(m)}
                     for m in self.models},
            "benchmarks": {},
            "beyond": {p: {m: {str(s): self.probe_results(m, s)[p] for s in self.seeds(m)} for m in C.beyond_models(cfg)}
                       for p in ("retrieval", "passkey")},
        }
        idx["beyond"]["precision"] = {m: {str(s): self.precision_results(m, s) for s in self.seeds(m)}
                                      for m in C.precision_models(cfg)}
        for m, v in self.bench_refs():
            for s in self.seeds(m):
                idx["benchmarks"].setdefault(m, {}).setdefault(str(s), {})[v] = self.bench_result(m, s, v)
        return idx

    @property
    def index_file(self) -> str:
        return f"{self.res}/index/{digest(self.index())}.json"

    def beyond_results(self) -> list[str]:
        idx = self.index()["beyond"]
        files = [f for p in ("retrieval", "passkey") for m in idx[p].values() for f in m.values()]
        return files + [f for m in idx["precision"].values() for by_seed in m.values() for f in by_seed.values()]

    def table_files(self) -> list[str]:
        return [f"{self.tables}/{t}.{ext}" for t in catalog.TABLES for ext in ("md", "tex", "csv")] + [
            f"{self.tables}/{f}" for f in ("README.md", "provenance.json", "data/results.csv", "data/per_position.csv")]

    def plot_files(self) -> list[str]:
        return [f"{self.tables}/plots/{p}.{ext}" for p in catalog.plot_names(self.config) for ext in ("png", "pdf")]

    def beyond_files(self) -> list[str]:
        b = self.beyond
        return ([f"{b}/{t}.{ext}" for t in catalog.BEYOND_TABLES for ext in ("md", "tex", "csv")]
                + [f"{b}/README.md", f"{b}/data/beyond.csv"]
                + [f"{b}/plots/{p}.{ext}" for p in catalog.BEYOND_PLOTS for ext in ("png", "pdf")])
