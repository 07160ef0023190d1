# Shared helpers: load and validate the config (one-line error, before any job), paths, targets.
import json
import os
import shlex
import sys

import yaml
from snakemake.utils import min_version

min_version("9.0")

from expe import config as C
from expe.errors import ConfigError

# Without --configfile, the offline default; --config overrides apply on top of it. (Snakemake's
# own `configfile:` directive would be deep-merged with a --configfile, mixing two configs.)
try:
    # Snakemake keeps the last of two equal keys; our strict reader names the file and the line
    for _f in workflow.overwrite_configfiles or []:
        C.read_yaml(_f)
    if "models" not in config:
        _default = C.read_yaml(workflow.source_path("../../config/config.yaml"))
        _merged = C.deep_merge(_default, dict(config))
        config.clear()
        config.update(_merged)
    C.validate(config)  # fills defaults from workflow/schemas/config.schema.yaml
except ConfigError as e:
    sys.exit(f"config error: {e}")


def _hash(obj) -> str:
    import hashlib

    return hashlib.sha256(C.dumps(obj).encode()).hexdigest()[:12]


# Jobs run the package's command line through the interpreter that runs Snakemake, so a venv that
# was never activated works (`.venv/bin/snakemake ...`); under --sdm conda, the env's own python.
# Interpreter and device reach the shell as environment variables, not as params or shell text:
# changing them must never make Snakemake delete and redo a trained model (both are rerun triggers).
_CONDA = "conda" in str(getattr(workflow.deployment_settings, "deployment_method", "")).lower()
os.environ.update(EXPE_PYTHON="python" if _CONDA else sys.executable, EXPE_DEVICE=config["device"])

# Everything derived from the config lives under a path keyed by the hash of what determines it,
# so a config change means new paths (never changed params under an existing one): exactly the
# affected steps rerun, and earlier results are kept beside the new ones.
RUN = config["run_name"]
RES = f"results/{RUN}"
DATA_KEYS = {k: config[k] for k in C.DATA_KEYS}
DATA = f"{RES}/data/{_hash(DATA_KEYS)}"
CONFIG_FILE = f"{RES}/config/{_hash(config)}.json"
EVAL_KEYS = {k: v for k, v in config["eval"].items() if k != "variants"}
EVAL = f"{RES}/eval/{_hash(EVAL_KEYS)}"
LOGS = f"logs/{RUN}"
BENCH = f"benchmarks/{RUN}"
TABLES = "paper_tables" if RUN == "default" else f"paper_tables/{RUN}"
BEYOND = f"{TABLES}/beyond"
DEVICE = config["device"]
ENV = "../../envs/cuda.yaml" if DEVICE == "cuda" else "../../envs/cpu.yaml"  # used with --sdm conda
MODELS = list(config["models"])
ALL_MODELS = list(C.model_entries(config))  # + the beyond study's bf16-trained copies
SHARDS = f"{DATA}/shards"
TOKENIZER = f"{DATA}/tokenizer/tokenizer.model"
TABLE_NAMES = ["section41", "ablations", "large", "scaling", "benchmarks", "hyperparameters", "differences",
               "context", "sliding", "speed"]
TABLE_FILES = [f"{TABLES}/{t}.{ext}" for t in TABLE_NAMES for ext in ("md", "tex", "csv")] + [
    f"{TABLES}/README.md",
    f"{TABLES}/provenance.json",
    f"{TABLES}/data/results.csv",
    f"{TABLES}/data/per_position.csv",
]
PLOT_NAMES = ["loss_vs_length", "per_position", "context", "training_curves", "position_values"] + [
    f"loss_vs_length_{key}" for key, *_ in C.plot_panels(config)]
PLOT_FILES = [f"{TABLES}/plots/{p}.{ext}" for p in PLOT_NAMES for ext in ("png", "pdf")]
BEYOND_TABLES = ["retrieval", "passkey", "precision", "precision_training", "position_values"]
BEYOND_FILES = [f"{BEYOND}/{t}.{ext}" for t in BEYOND_TABLES for ext in ("md", "tex", "csv")] + [
    f"{BEYOND}/README.md",
    f"{BEYOND}/data/beyond.csv",
] + [f"{BEYOND}/plots/{p}.{ext}" for p in ("retrieval", "passkey", "precision") for ext in ("png", "pdf")]

wildcard_constraints:
    model="|".join(ALL_MODELS),
    variant="[A-Za-z0-9_.-]+",
    specid="[0-9a-f]{12}",
    seed="-?[0-9]+",


def all_cores() -> int:
    """--cores of a local run; 1 under a cluster executor run without --cores (the profile's set-threads
    then decides)."""
    try:
        return workflow.cores
    except WorkflowError:
        return 1


def spec(model, seed):
    """The resolved model spec (architecture, encoding, training hyper-parameters, seed)."""
    return C.dumps(C.model_spec(config, model, int(seed)))


def model_dir(model, seed):
    """results/<run>/models/<model>/<hash of its spec (seed included) and data>: a changed spec is a
    new folder, so exactly that model (and what depends on it) reruns; the old one is kept."""
    return f"{RES}/models/{model}/{_hash([spec(model, seed), DATA])}"


def pe_args(wildcards):
    if wildcards.variant == "base":
        return ""
    overrides = config["eval"]["variants"][wildcards.variant]["pe"]
    return " ".join(f"--pe {k}={v}" for k, v in overrides.items())


def runs(models):
    """(model, seed) of every training run of these model entries."""
    return [(m, s) for m in models for s in C.seeds(config, m)]


def eval_results(models):
    return [f"{EVAL}/{m}/s{s}/{v}.json" for m, s in runs(models) for v in C.eval_variants(config, m)]


def table_models():
    out = []
    for rows in config["tables"].values():
        for ref in rows.values():
            m, _ = C.parse_ref(ref)
            if m not in out:
                out.append(m)
    return out


def benchmark_results():
    refs = {C.parse_ref(r) for r in config["tables"]["benchmarks"].values()}
    return [f"{RES}/benchmarks/{m}/s{s}/{v}.json" for m, v in sorted(refs) for s in C.seeds(config, m)]


def weights(models):
    return [f"{model_dir(m, s)}/model.safetensors" for m, s in runs(models)]


SPEED_FILE = f"{RES}/speed/{_hash([config['speed'], [spec(m, C.seeds(config, m)[0]) for m in table_models()]])}.json"


def results_index():
    """Where every result of this config lives: what the tables and plots read (so a cell traces
    to a file), written by the `results_index` rule."""
    idx = {
        "run_name": RUN,
        "config_file": CONFIG_FILE,
        "data": f"{SHARDS}/manifest.json",
        "speed": SPEED_FILE,
        "models": {m: {str(s): model_dir(m, s) for s in C.seeds(config, m)} for m in ALL_MODELS},
        "eval": {m: {str(s): {v: f"{EVAL}/{m}/s{s}/{v}.json" for v in C.eval_variants(config, m)}
                     for s in C.seeds(config, m)} for m in MODELS},
        "benchmarks": {},
        "beyond": beyond_index(),
    }
    for m, v in sorted({C.parse_ref(r) for r in config["tables"]["benchmarks"].values()}):
        for s in C.seeds(config, m):
            idx["benchmarks"].setdefault(m, {}).setdefault(str(s), {})[v] = f"{RES}/benchmarks/{m}/s{s}/{v}.json"
    return idx


def beyond_index():
    probes = {p: {m: {str(s): f"{RES}/beyond/{m}/s{s}/{p}.json" for s in C.seeds(config, m)}
                  for m in C.beyond_models(config)} for p in ("retrieval", "passkey")}
    probes["precision"] = {m: {str(s): {p: f"{RES}/beyond/{m}/s{s}/precision_{p}.json"
                                        for p in config["beyond"]["precision"]["precisions"]}
                               for s in C.seeds(config, m)} for m in C.precision_models(config)}
    return probes


def beyond_results():
    idx = beyond_index()
    files = [f for p in ("retrieval", "passkey") for m in idx[p].values() for f in m.values()]
    files += [f for m in idx["precision"].values() for by_seed in m.values() for f in by_seed.values()]
    return files


INDEX_FILE = f"{RES}/index/{_hash(results_index())}.json"


def source_files(wildcards):
    """A local corpus is an input: adding or editing its files reruns the data steps."""
    data = config["data"]
    if data["source"] == "text_dir":
        from expe.data.prepare import text_dir_files

        try:
            return [str(p) for p in text_dir_files(data["path"])]
        except Exception as e:
            raise WorkflowError(f"config error: {e}")
    if data["source"] in ("jsonl", "parquet"):
        return [data["path"]]
    return []


def _spec_of(wildcards):
    """model + specid -> the spec (the seed is the one whose folder hash is specid)."""
    for s in C.seeds(config, wildcards.model):
        if model_dir(wildcards.model, s).endswith(wildcards.specid):
            return spec(wildcards.model, s)
    raise WorkflowError(f"no seed of model {wildcards.model} has spec id {wildcards.specid}")


def _train_cmd(wildcards, threads):
    n = C.gpus(config, wildcards.model)
    if n > 1:  # DDP: torchrun through expe.launch (exit 143 on preemption, so retries resume)
        return f"OMP_NUM_THREADS={max(1, threads // n)} {LAUNCH} --standalone --nproc_per_node {n} -m expe.cli train"
    return f"\"$EXPE_PYTHON\" -m expe.cli train"


def _sliding(wildcards):
    s = config["eval"]["sliding"]
    if not s["multiples"]:
        return ""
    out = f"--sliding {','.join(map(str, s['multiples']))}"
    if s["stride"]:
        out += f" --stride {s['stride']}"
    if s["max_tokens"]:
        out += f" --sliding-max-tokens {s['max_tokens']}"
    return out


onstart:
    # Checks that need the machine the jobs run on: only for local runs (a cluster's nodes differ
    # from the submitting host). One line, before any job runs, and nothing is deleted.
    if workflow.local_exec and not workflow.dryrun:
        from expe.runtime import check_devices

        try:
            check_devices(DEVICE, max(C.gpus(config, m) for m in MODELS),
                          [C.model_spec(config, m)["train"]["precision"] for m in ALL_MODELS]
                          + [config["eval"]["precision"]])
        except ConfigError as e:
            sys.exit(f"config error: {e}")
