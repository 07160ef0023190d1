"""Configuration: load YAML, validate against the schema (filling its defaults), check what a
schema cannot (l <= d, references between sections, window lengths), and resolve one model
entry into the *spec* that `expe train` runs. Every problem is one line naming the key."""

from __future__ import annotations

import copy
import difflib
import json
from dataclasses import fields
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from expe.nn.encodings import REGISTRY
from expe.errors import ConfigError
from expe.nn.model import PRESETS, ModelConfig
from expe.training.loop import TrainConfig


def schema() -> dict[str, Any]:
    text = resources.files("expe.config").joinpath("schema.yaml").read_text()
    return yaml.safe_load(text)


def _with_defaults(validator_class):
    """jsonschema validator that fills `default` values into the instance (as Snakemake does)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft7Validator)


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _describe(err: jsonschema.ValidationError) -> str:
    """One line for a jsonschema error: the key, what is wrong, what is allowed."""
    where = _key(err.absolute_path)
    v, kind = err.validator, err.validator_value
    if v == "additionalProperties" and isinstance(err.instance, dict):
        allowed = list(err.schema.get("properties", {}))
        extra = [k for k in err.instance if k not in allowed]
        bad = extra[0] if extra else "?"
        hint = difflib.get_close_matches(str(bad), allowed, n=1)
        prefix = f"{where}.{bad}" if err.absolute_path else str(bad)
        return f"{prefix}: unknown key" + (f" (did you mean {hint[0]!r}?)" if hint else "") + (
            f"; allowed: {', '.join(allowed)}" if allowed else ""
        )
    if v == "enum":
        return f"{where}: {err.instance!r} is not allowed (allowed: {', '.join(map(str, kind))})"
    if v == "type":
        want = " or ".join(kind) if isinstance(kind, list) else kind
        return f"{where}: must be of type {want}, got {err.instance!r}"
    if v == "required":
        missing = [k for k in kind if k not in err.instance]
        return f"{where}: missing required key {missing[0]!r}"
    if v in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        op = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}[v]
        return f"{where}: must be {op} {kind}, got {err.instance!r}"
    if v == "pattern":
        return f"{where}: {err.instance!r} must match {kind}"
    return f"{where}: {err.message}"


DATA_KEYS = ("seed", "data", "tokenizer")


def validate(config: dict[str, Any], data_only: bool = False) -> dict[str, Any]:
    """Validate `config` in place (defaults filled) and return it; raise ConfigError on the first problem.

    data_only: the config holds only the keys of the data steps (seed, data, tokenizer)."""
    if not isinstance(config, dict):
        raise ConfigError("config: must be a mapping of keys to values")
    sch = schema()
    if data_only:
        sch["required"] = []
        sch["properties"] = {k: v for k, v in sch["properties"].items() if k in DATA_KEYS}
    errors = list(_Validator(sch).iter_errors(config))
    if errors:
        # the most specific error (deepest path) gives the clearest message
        raise ConfigError(_describe(max(errors, key=lambda e: len(e.absolute_path))))
    if data_only:
        _data_checks(config)
    else:
        _semantic_checks(config)
    return config


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a key given twice in one mapping is an error (PyYAML keeps the last
    silently: two model entries of the same name would be merged into one)."""


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise ConfigError(f"{loader.name}: line {line}: duplicate key {key!r} (first given on line {seen[key]}); "
                              "each key, e.g. a model entry's name, may appear once per mapping")
        seen[key] = line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file; a syntax error or a duplicate key is one line naming the file and line."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file {p} not found")
    if p.is_dir():
        raise ConfigError(f"config file {p} is a folder, not a config file")
    try:
        with open(p, encoding="utf-8") as f:
            loader = _StrictLoader(f)
            loader.name = str(p)
            try:
                return loader.get_single_data()
            finally:
                loader.dispose()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(f"config file {p} is not valid YAML: {where}{e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {p} is not valid YAML: {str(e).splitlines()[0]}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {p} is not UTF-8 text") from None


def load(path: str | Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    cfg = read_yaml(path) or {}
    if overrides:
        cfg = deep_merge(cfg, overrides)
    return validate(cfg)


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def architecture(config: dict[str, Any], name: str, where: str) -> dict[str, Any]:
    archs = config.get("architectures", {})
    if name in archs:
        arch = dict(archs[name])
        base = PRESETS[arch.pop("preset")] if "preset" in arch else {}
        merged = {**base, **arch}
    elif name in PRESETS:
        merged = dict(PRESETS[name])
    else:
        allowed = ", ".join(list(archs) + list(PRESETS))
        raise ConfigError(f"{where}: unknown architecture {name!r} (allowed: {allowed})")
    merged.pop("vocab_size", None)  # taken from the tokenizer
    merged.pop("seq_len", None)  # taken from train.seq_len
    return merged


BF16_SUFFIX = "_bf16train"


def model_entries(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The config's model entries plus those the beyond-paper study derives from them: each model
    of `beyond.bf16_training` trained again with bf16 autocast, as `<name>_bf16train`."""
    entries = dict(config["models"])
    for m in config.get("beyond", {}).get("bf16_training", []):
        if m in config["models"]:
            e = copy.deepcopy(config["models"][m])
            e["train"] = {**e.get("train", {}), "precision": "bf16"}
            entries[m + BF16_SUFFIX] = e
    return entries


def seeds(config: dict[str, Any], name: str) -> list[int]:
    """The training seeds of one model entry: its own `seeds`, else the top-level `seeds`, else [seed]."""
    entry = model_entries(config)[name]
    if entry.get("seeds"):
        return list(entry["seeds"])
    if "seed" in entry:
        return [entry["seed"]]
    return list(config.get("seeds") or [config.get("seed", 1234)])


def gpus(config: dict[str, Any], name: str) -> int:
    """Processes (GPUs) per node of one model's training job."""
    return int(model_entries(config)[name].get("gpus", config.get("gpus", 1)))


def nodes(config: dict[str, Any], name: str) -> int:
    return int(model_entries(config)[name].get("nodes", config.get("nodes", 1)))


def model_spec(config: dict[str, Any], name: str, seed: int | None = None) -> dict[str, Any]:
    """Everything that determines one trained model: the input of `expe train`."""
    models = model_entries(config)
    if name not in models:
        raise ConfigError(f"models: no entry {name!r} (entries: {', '.join(models)})")
    entry = models[name]
    train = {f.name: f.default for f in fields(TrainConfig)}
    train.update(config.get("train", {}))
    train.update(entry.get("train", {}))
    train["betas"] = list(train["betas"])
    return {
        "name": name,
        "seed": seeds(config, name)[0] if seed is None else int(seed),
        "model": {**architecture(config, entry["architecture"], f"models.{name}.architecture"), "pe": dict(entry["pe"])},
        "train": train,
    }


def parse_ref(ref: str) -> tuple[str, str]:
    """'model' or 'model@variant' -> (model, variant); the plain model is variant 'base'."""
    model, _, variant = ref.partition("@")
    return model, variant or "base"


def eval_variants(config: dict[str, Any], model: str) -> list[str]:
    """'base' plus every inference-time variant that lists this model."""
    variants = config.get("eval", {}).get("variants", {})
    return ["base"] + [v for v, spec in variants.items() if model in spec["models"]]


PLOT_TITLES = {"section41": "Section 4.1 (+ NoPE, ALiBi)", "ablations": "Ablations (Table 7)",
               "large": "Section 4.2 (Llama architecture)"}


def plot_panels(config: dict[str, Any]) -> list[tuple[str, str, str, dict[str, str]]]:
    """(file key, title, table, rows) of the loss plots: one per paper table, the scaling table split
    in two (ExPE/ExQPE with the scale swept; RoPE variants and the other baselines) so lines stay apart."""
    out = []
    for table in ("section41", "ablations", "large", "scaling"):
        rows = config["tables"].get(table, {})
        if not rows:
            continue
        if table == "scaling":
            expe = {k: v for k, v in rows.items() if "ExPE" in k or "ExQPE" in k}
            rest = {k: v for k, v in rows.items() if k not in expe}
            if expe:
                out.append(("scaling_expe", "Section 4.3: ExPE / ExQPE, scale swept", table, expe))
            if rest:
                out.append(("scaling_baselines", "Section 4.3: RoPE variants and baselines", table, rest))
        else:
            out.append((table, PLOT_TITLES[table], table, rows))
    return out


def beyond_models(config: dict[str, Any]) -> list[str]:
    """The models the probes run on (beyond.models, default: the Section 4.1 and large tables)."""
    chosen = config.get("beyond", {}).get("models")
    if chosen is not None:
        return list(chosen)
    out: list[str] = []
    for table in ("section41", "large"):
        for ref in config["tables"].get(table, {}).values():
            m, _ = parse_ref(ref)
            if m not in out:
                out.append(m)
    return out


def precision_models(config: dict[str, Any]) -> list[str]:
    chosen = config.get("beyond", {}).get("precision", {}).get("models")
    base = list(chosen) if chosen is not None else beyond_models(config)
    return base + [m + BF16_SUFFIX for m in config.get("beyond", {}).get("bf16_training", []) if m + BF16_SUFFIX not in base]


def _semantic_checks(config: dict[str, Any]) -> None:
    models = config["models"]
    for name in models:
        if name.endswith(BF16_SUFFIX):
            raise ConfigError(f"models.{name}: names ending in {BF16_SUFFIX!r} are reserved for beyond.bf16_training")
        if "seed" in models[name] and "seeds" in models[name]:
            raise ConfigError(f"models.{name}: give seeds or seed, not both")
        g = gpus(config, name) * nodes(config, name)
        bs = model_spec(config, name)["train"]["batch_size"]
        if bs % g:
            raise ConfigError(f"models.{name}: train.batch_size {bs} cannot be split over gpus: {g} "
                              f"(each micro-batch is split row-wise over the processes); use a multiple of {g}")
        spec = model_spec(config, name)
        m, t = spec["model"], spec["train"]
        where = f"models.{name}"
        try:
            TrainConfig(**t)
            ModelConfig(**{**m, "vocab_size": config["tokenizer"]["vocab_size"], "seq_len": t["seq_len"]})
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        except TypeError as e:
            raise ConfigError(f"{where}: {e}") from None
        pe = m["pe"]
        entry = REGISTRY[pe["name"]]
        for key in pe:
            if key != "name" and key not in entry.keys:
                raise ConfigError(
                    f"{where}.pe.{key}: not a parameter of {pe['name']} (allowed: {', '.join(entry.keys) or 'none'})"
                )
        l = pe.get("l", entry.defaults.get("l"))
        if l is not None and not 0 < l <= m["d_model"]:
            raise ConfigError(f"{where}.pe.l: must satisfy 0 < l <= d_model ({m['d_model']}), got {l}")

    ev = config["eval"]
    for vname, var in ev["variants"].items():
        for model in var["models"]:
            if model not in models:
                raise ConfigError(f"eval.variants.{vname}.models: no model entry {model!r} (entries: {', '.join(models)})")
            allowed = REGISTRY[models[model]["pe"]["name"]].keys
            for key in var["pe"]:
                if key not in allowed:
                    raise ConfigError(
                        f"eval.variants.{vname}.pe.{key}: not an option of {model}'s encoding "
                        f"{models[model]['pe']['name']} (allowed: {', '.join(allowed) or 'none'})"
                    )

    _data_checks(config)
    data = config["data"]
    hold = data["test_min_tokens"] if data["test_min_tokens"] is not None else data["min_tokens"]
    bey = config["beyond"]
    for name in models:
        L = model_spec(config, name)["train"]["seq_len"]
        needs = [("eval.multiples", k, k * L + 1) for k in ev["multiples"]]
        needs += [("eval.sliding.multiples", k, k * L + 1) for k in ev["sliding"]["multiples"]]
        needs += [("beyond.passkey.multiples", k, k * L + 1) for k in bey["passkey"]["multiples"]]
        needs += [("beyond.precision.multiples", k, k * L + 1) for k in bey["precision"]["multiples"]]
        seg = bey["retrieval"]["segment"]
        needs += [("beyond.retrieval.distances", d, int(round(d * L)) + 2 * seg + 2) for d in bey["retrieval"]["distances"]]
        for key, k, tokens in needs:
            if tokens > hold:
                what = f"ev={k} needs windows of {tokens} tokens" if "distances" not in key else \
                    f"D={k}L needs {tokens} tokens"
                raise ConfigError(
                    f"{key}: {what} (model {name}, seq_len {L}) but "
                    f"test documents are only guaranteed {hold} (data.test_min_tokens / data.min_tokens); "
                    f"raise data.test_min_tokens to >= {tokens} or drop {k}"
                )
    sl = ev["sliding"]
    if sl["stride"] is not None:
        for name in models:
            L = model_spec(config, name)["train"]["seq_len"]
            if sl["multiples"] and sl["stride"] > min(sl["multiples"]) * L:
                raise ConfigError(f"eval.sliding.stride: {sl['stride']} is longer than the shortest sliding window "
                                  f"({min(sl['multiples'])} x {L} tokens of model {name})")
    for key in ("models",):
        for m in bey[key] or []:
            if m not in models:
                raise ConfigError(f"beyond.models: no model entry {m!r} (entries: {', '.join(models)})")
    for m in bey["precision"]["models"] or []:
        if m not in models:
            raise ConfigError(f"beyond.precision.models: no model entry {m!r} (entries: {', '.join(models)})")
    for m in bey["bf16_training"]:
        if m not in models:
            raise ConfigError(f"beyond.bf16_training: no model entry {m!r} (entries: {', '.join(models)})")

    for table, rows in config["tables"].items():
        for row, ref in rows.items():
            model, variant = parse_ref(ref)
            if model not in models:
                raise ConfigError(f"tables.{table}.{row}: no model entry {model!r} (entries: {', '.join(models)})")
            if variant != "base" and variant not in eval_variants(config, model):
                raise ConfigError(
                    f"tables.{table}.{row}: variant {variant!r} is not defined for {model} in eval.variants"
                )


def _data_checks(config: dict[str, Any]) -> None:
    data = config["data"]
    if data["source"] in ("text_dir", "jsonl", "parquet") and not data["path"]:
        raise ConfigError(f"data.path: required for data.source {data['source']!r}")
    if config["tokenizer"]["type"] == "load" and not config["tokenizer"]["path"]:
        raise ConfigError("tokenizer.path: required when tokenizer.type is 'load'")


def dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def schema_markdown() -> str:
    """config/README.md: every key of the schema with its type, default and description."""
    sch = schema()

    def typ(s: dict) -> str:
        if "enum" in s:
            return " / ".join(map(str, s["enum"]))
        if "$ref" in s:
            return s["$ref"].split("/")[-1]
        if "oneOf" in s:
            return " or ".join(typ(x) for x in s["oneOf"])
        t = s.get("type", "object")
        return " or ".join(t) if isinstance(t, list) else t

    rows: list[str] = []
    extra = {
        "data": "corpus and its preparation (one pass: tokenise, filter, split, shard)",
        "tokenizer": "the tokenizer", "train": "training hyper-parameters shared by every model entry",
        "architectures": "named architectures: a preset and/or explicit keys",
        "architectures.<name>.preset": "start from a preset (paper-small 35M, paper-S 135M, paper-M 342M, cpu-*)",
        "architectures.<name>.arch": "gpt (LayerNorm, GELU, biases; Section 4.1) or llama (RMSNorm, SwiGLU)",
        "architectures.<name>.d_model": "model width", "architectures.<name>.n_layer": "blocks",
        "architectures.<name>.n_head": "attention heads", "architectures.<name>.dropout": "dropout probability",
        "architectures.<name>.tie_embeddings": "input embedding tied to the output head",
        "architectures.<name>.ffn_hidden": "MLP width (null: 4d for gpt, 8d/3 rounded to 256 for llama)",
        "architectures.<name>.norm_eps": "epsilon of the norms",
        "models": "model entries: each is trained once per seed and evaluated",
        "models.<name>.architecture": "a name of `architectures` or a preset",
        "models.<name>.pe": "the positional encoding: `name` and its parameters",
        "models.<name>.pe.name": "the encoding (METHOD.md; `expe_*` are the Table 7 ablations)",
        "models.<name>.pe.S": "ExPE start value S (default 1.0)", "models.<name>.pe.theta": "ExPE step theta (default 1/L; ExQPE l/L)",
        "models.<name>.pe.l": "dims overwritten (default d/8)",
        "models.<name>.pe.apply_to_value": "also overwrite the W_v input", "models.<name>.pe.scale": "inference scale of theta (1.0)",
        "models.<name>.pe.base": "RoPE / sinusoidal base (10000)",
        "models.<name>.pe.interpolation": "RoPE position interpolation factor (1.0: off)",
        "models.<name>.pe.ntk_factor": "RoPE NTK-aware base scaling (1.0: off)",
        "models.<name>.pe.yarn_factor": "RoPE YaRN factor s (1.0: off)",
        "models.<name>.train": "per-entry overrides of `train`", "models.<name>.seeds": "per-entry seeds (overrides `seeds`)",
        "models.<name>.gpus": "per-entry `gpus`", "models.<name>.nodes": "per-entry `nodes`",
        "eval": "length-extrapolation evaluation", "eval.multiples": "ev values: window = ev x L (documents permitting)",
        "eval.sliding": "sliding-window evaluation (every scored token with the same context)",
        "eval.sliding.multiples": "ev values of the sliding evaluation (its scored tokens start at max ev x L - stride)",
        "eval.variants.<name>.pe": "inference-time encoding options of the variant",
        "eval.variants.<name>.pe.scale": "ExPE/ExQPE: theta x scale", "eval.variants.<name>.pe.interpolation": "RoPE PI",
        "eval.variants.<name>.pe.ntk_factor": "RoPE NTK-aware", "eval.variants.<name>.pe.yarn_factor": "RoPE YaRN",
        "eval.variants.<name>.models": "model entries evaluated with it (table rows name them as model@variant)",
        "benchmarks": "lm-evaluation-harness benchmarks (Table 4)",
        "speed.warmup": "untimed steps after building each model", "speed.repeats": "interleaved rounds over the models",
        "speed.threads": "CPU threads of the measurement",
        "beyond.retrieval": "repeat-retrieval probe", "beyond.passkey": "passkey retrieval (Mohtashami & Jaggi 2023)",
        "beyond.passkey.multiples": "window lengths in multiples of L", "beyond.passkey.trials": "prompts per length and seed",
        "beyond.passkey.candidates": "keys ranked per prompt (chance: 1/candidates)", "beyond.passkey.digits": "digits of a key",
        "beyond.precision": "evaluation in several precisions", "beyond.precision.precisions": "autocast dtypes compared to fp32",
        "beyond.precision.multiples": "ev values", "beyond.precision.max_tokens": "tokens per length and precision",
        "tables.section41": "rows of Table 2: label -> model entry", "tables.ablations": "rows of Table 7",
        "tables.large": "rows of Table 1", "tables.scaling": "rows of Table 3 (model@variant for inference variants)",
        "tables.benchmarks": "rows of Table 4",
    }

    def walk(props: dict, prefix: str) -> None:
        for key, s in props.items():
            if "$ref" in s and s["$ref"].startswith("#/definitions/") and \
                    "properties" in sch["definitions"].get(s["$ref"].split("/")[-1], {}):
                sub = sch["definitions"][s["$ref"].split("/")[-1]]
                desc = s.get("description", sub.get("description", "")) or extra.get(f"{prefix}{key}", "")
                rows.append(f"| `{prefix}{key}` | mapping | | {desc} |")
                walk(sub["properties"], f"{prefix}{key}.")
                continue
            default = json.dumps(s["default"]) if "default" in s else ""
            desc = s.get("description") or extra.get(f"{prefix}{key}", "")
            rows.append(f"| `{prefix}{key}` | {typ(s)} | {default} | {desc} |")
            if "properties" in s:
                walk(s["properties"], f"{prefix}{key}.")
            ap = s.get("additionalProperties")
            if isinstance(ap, dict) and "properties" in ap:
                walk(ap["properties"], f"{prefix}{key}.<name>.")

    walk(sch["properties"], "")
    pe = sch["definitions"]["pe"]["properties"]
    return "\n".join([
        "# Configuration keys",
        "",
        "Generated from `workflow/schemas/config.schema.yaml` by `expe config-doc` (a test keeps this file",
        "in step with the schema). A config is validated before any job runs; defaults are filled from the",
        "schema; an unknown or misspelt key is a one-line error naming it. `models.<name>.train` takes the",
        "keys of `train`; `models.<name>.pe` the keys of an encoding:",
        "",
        "| key | type | default | description |",
        "| --- | --- | --- | --- |",
        *rows,
        "",
        "Encoding keys (`models.<name>.pe`): " + ", ".join(f"`{k}`" for k in pe) + ". Which ones an encoding "
        "takes is in `src/expe/encodings.py` (`REGISTRY`); `scale` (ExPE/ExQPE), `interpolation`, `ntk_factor` "
        "and `yarn_factor` (RoPE) are inference-time options, set per `eval.variants` entry.",
        "",
    ])
