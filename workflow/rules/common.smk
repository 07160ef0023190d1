# Shared helpers: load and validate the config (one-line error, before any job), paths, targets.
import json
import os
import sys

import yaml
from snakemake.utils import min_version

min_version("9.0")

from expe import config as C
from expe.errors import ConfigError

# Without --configfile, the offline default; --config overrides apply on top of it. (Snakemake's
# own `configfile:` directive would be deep-merged with a --configfile, mixing two configs.)
if "models" not in config:
    with open(workflow.source_path("../../config/config.yaml")) as f:
        _merged = C.deep_merge(yaml.safe_load(f), dict(config))
    config.clear()
    config.update(_merged)

try:
    C.validate(config)  # fills defaults from workflow/schemas/config.schema.yaml
except ConfigError as e:
    sys.exit(f"config error: {e}")

def _hash(obj) -> str:
    import hashlib

    return hashlib.sha256(C.dumps(obj).encode()).hexdigest()[:12]


# Everything derived from the config lives under a path keyed by the hash of what determines it,
# so a config change means new paths (never changed params under an existing one): exactly the
# affected steps rerun, and earlier results are kept beside the new ones.
RUN = config["run_name"]
RES = f"results/{RUN}"
DATA_KEYS = {k: config[k] for k in C.DATA_KEYS}
DATA = f"{RES}/data/{_hash(DATA_KEYS)}"
CONFIG_FILE = f"{RES}/config/{_hash(config)}.json"
LOGS = f"logs/{RUN}"
BENCH = f"benchmarks/{RUN}"
TABLES = "paper_tables" if RUN == "default" else f"paper_tables/{RUN}"
DEVICE = config["device"]
ENV = "../../envs/cuda.yaml" if DEVICE == "cuda" else "../../envs/cpu.yaml"  # used with --sdm conda
MODELS = list(config["models"])
SHARDS = f"{DATA}/shards"
TOKENIZER = f"{DATA}/tokenizer/tokenizer.model"
TABLE_NAMES = ["section41", "ablations", "large", "scaling", "benchmarks", "hyperparameters"]
TABLE_FILES = [f"{TABLES}/{t}.{ext}" for t in TABLE_NAMES for ext in ("md", "tex", "csv")] + [
    f"{TABLES}/README.md",
    f"{TABLES}/provenance.json",
]
PLOT_NAMES = ["loss_vs_length", "per_position", "training_curves", "position_values"]
PLOT_FILES = [f"{TABLES}/plots/{p}.{ext}" for p in PLOT_NAMES for ext in ("png", "pdf")]

wildcard_constraints:
    model="|".join(MODELS),
    variant="[A-Za-z0-9_.-]+",
    specid="[0-9a-f]{12}",


def spec(wildcards):
    """The resolved model spec (architecture, encoding, training hyper-parameters, seed)."""
    return C.dumps(C.model_spec(config, wildcards.model))


def model_dir(wildcards):
    """results/<run>/models/<model>/<hash of its spec and data>: a changed spec is a new folder, so
    exactly that model (and what depends on it) reruns; the model of the old spec is kept."""
    return f"{RES}/models/{wildcards.model}/{_hash([spec(wildcards), DATA])}"


def pe_args(wildcards):
    if wildcards.variant == "base":
        return ""
    overrides = config["eval"]["variants"][wildcards.variant]["pe"]
    return " ".join(f"--pe {k}={v}" for k, v in overrides.items())


def eval_results(models):
    return [f"{RES}/eval/{m}/{v}.json" for m in models for v in C.eval_variants(config, m)]


def benchmark_results():
    refs = {C.parse_ref(r) for r in config["tables"]["benchmarks"].values()}
    return [f"{RES}/benchmarks/{m}/{v}.json" for m, v in sorted(refs)]
