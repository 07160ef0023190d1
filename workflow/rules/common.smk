# Shared by the rules: the config, validated once (one-line error, before any job), and the `Plan`
# (expe/workflow.py, torch-free and unit-tested) that names every path and job setting.
import json
import os
import shlex
import sys

from snakemake.utils import min_version

min_version("9.0")

from expe import config as C
from expe.data.sources import local_source_files
from expe.errors import ConfigError, DataError
from expe.io import write_json
from expe.workflow import Plan, drop_default_job_rate_limit

# The --configfile(s) read by our strict reader (a duplicate key names its file and line; 3e-4 is a
# number), then the --config overrides on top (where the schema wants a number, a boolean or null, the
# text Snakemake hands over is read as YAML would: C.command_line_values); a config without model
# entries (none given, or a partial file) goes on top of the offline default. (Snakemake's own
# `configfile:` directive would be deep-merged with a --configfile, mixing two configs.)
try:
    _merged = {}
    for _f in workflow.overwrite_configfiles or []:
        _merged = C.deep_merge(_merged, C.read_yaml(_f) or {})
    _merged = C.deep_merge(_merged, C.command_line_values(workflow.config_settings.config or {}))
    if "models" not in _merged:
        _merged = C.deep_merge(C.read_yaml(workflow.source_path("../../config/config.yaml")), _merged)
    config.clear()
    config.update(_merged)
    C.validate(config)  # fills the defaults of the schema (src/expe/config/schema.yaml)
    PLAN = Plan(config)
    # a wrong data.path: one line, before any job; not in each cluster job, which reads this file again
    # on a node that may not see the corpus (there the data steps' input function lists it)
    SOURCE_FILES = local_source_files(config["data"]) if workflow.is_main_process else None
except (ConfigError, DataError) as e:
    sys.exit(f"config error: {e}")

# Jobs run the package's command line through the interpreter that runs Snakemake, so a venv that was
# never activated works (`.venv/bin/snakemake ...`); under --sdm conda, the env's own python.
# Interpreter and device reach the shell as environment variables, not as params or shell text:
# changing them must never make Snakemake delete and redo a trained model (both are rerun triggers).
_CONDA = "conda" in str(getattr(workflow.deployment_settings, "deployment_method", "")).lower()
os.environ.update(EXPE_PYTHON="python" if _CONDA else sys.executable, EXPE_DEVICE=config["device"])
DEVICE = config["device"]
GPU = 0 if DEVICE == "cpu" else 1
ENV = "../../envs/cuda.yaml" if DEVICE == "cuda" else "../../envs/cpu.yaml"  # used with --sdm conda
RES, LOGS, BENCH = PLAN.res, PLAN.logs, PLAN.bench


wildcard_constraints:
    model="|".join([*PLAN.all_models, *PLAN.recall_models]),
    task="[a-z0-9]+",
    hash="[0-9a-f]{12}",
    ehash="[0-9a-f]{12}",
    bhash="[0-9a-f]{12}",
    phash="[0-9a-f]{12}",
    qhash="[0-9a-f]{12}",
    thash="[0-9a-f]{12}",
    kind="[a-z_]+",


def all_cores() -> int:
    """--cores of a local run; 1 under a cluster executor run without --cores (the profile's set-threads
    then decides)."""
    try:
        return workflow.cores
    except WorkflowError:
        return 1


def model_dir(w):
    return f"{RES}/models/{w.model}/{w.hash}"


def source_files(wildcards):
    """A local corpus is an input: adding or editing its files reruns the data steps (listed once per
    process: the main one at start-up)."""
    if SOURCE_FILES is not None:
        return SOURCE_FILES
    try:
        return local_source_files(config["data"])
    except DataError as e:
        raise WorkflowError(f"config error: {e}")


onstart:
    # Snakemake's default job rate limit (100 starts per 1 s) makes its scheduler wake up once a second
    # per finished job while others wait: half a core of the 2 taken from the jobs (expe/workflow.py).
    drop_default_job_rate_limit(workflow)
    # Checks that need the machine the jobs run on: only for local runs (a cluster's nodes differ
    # from the submitting host). One line, before any job runs, and nothing is deleted.
    if workflow.local_exec and not workflow.dryrun:
        from expe.runtime import check_devices

        try:
            check_devices(DEVICE, max(C.gpus(config, m) for m in PLAN.models),
                          [C.model_spec(config, m)["train"]["precision"] for m in PLAN.all_models]
                          + [config["eval"]["precision"]])
        except ConfigError as e:
            sys.exit(f"config error: {e}")


def recall_learned_seeds(task):
    """Per encoding of a recall task: each seed's in-distribution accuracy and the seeds below recall.threshold."""
    from expe.report.recall import learned_seeds

    runs = PLAN.recall_runs(task)
    files = {label: {str(s): PLAN.recall_result(m, s) for s in PLAN.seeds(m)} for label, m in runs.items()}
    return learned_seeds(files, config["recall"]["threshold"])


def recall_longer(wildcards):
    """The longer runs' results, for the seeds each task's `recall_learned` found below the threshold."""
    if not config["recall"]["longer"]["enabled"]:
        return []
    out = []
    for task in config["recall"]["tasks"]:
        with open(checkpoints.recall_learned.get(task=task, lhash=PLAN.learned_hash(task)).output[0]) as f:
            below = {label: v["below"] for label, v in json.load(f)["labels"].items()}
        out += PLAN.longer_results(task, below)
    return out
