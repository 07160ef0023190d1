"""From a validated config to what jobs run: model entries (plus the bf16-trained copies of the beyond
study), their seeds, and the *spec* of one training run (architecture, encoding, training
hyper-parameters, seed); table row references ('model' or 'model@variant')."""

from __future__ import annotations

import copy
from typing import Any

from expe.config.schema import section_defaults
from expe.errors import ConfigError

DATA_KEYS = ("seed", "data", "tokenizer")  # what the data steps (tokenizer, shards) depend on
BF16_SUFFIX = "_bf16train"
AUG_SUFFIX = "_copyaug"  # model entries trained again on copy-augmented windows (recall.augmented)


def architecture(config: dict[str, Any], name: str, where: str) -> dict[str, Any]:
    from expe.nn.presets import PRESETS

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


def model_entries(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The config's model entries plus those the beyond-paper study derives from them: each model
    of `beyond.bf16_training` trained again with bf16 autocast, as `<name>_bf16train`."""
    entries = dict(config["models"])
    for m in config.get("beyond", {}).get("bf16_training", []):
        if m in config["models"]:
            e = copy.deepcopy(config["models"][m])
            e["train"] = {**e.get("train", {}), "precision": "bf16"}
            entries[m + BF16_SUFFIX] = e
    aug = config.get("recall", {}).get("augmented")
    for m in augmented_models(config):
        if m in config["models"]:
            e = copy.deepcopy(config["models"][m])
            e["augment"] = {"fraction": aug["fraction"], "segment": aug["segment"]}
            entries[m + AUG_SUFFIX] = e
    return entries


def augmented_models(config: dict[str, Any]) -> list[str]:
    """The model entries trained again on copy-augmented windows (recall.augmented.models, default: the
    Section 4.1 table's)."""
    aug = config.get("recall", {}).get("augmented")
    if not aug:
        return []
    chosen = aug.get("models")
    return list(chosen) if chosen is not None else table_models(config, ("section41",))


def seeds(config: dict[str, Any], name: str) -> list[int]:
    """The training seeds of one model entry: its own `seeds`, else the top-level `seeds`, else [seed]."""
    entry = model_entries(config)[name]
    if entry.get("seeds"):
        return list(entry["seeds"])
    if "seed" in entry:
        return [entry["seed"]]
    return list(config.get("seeds") or [config.get("seed", 1234)])


def gpus(config: dict[str, Any], name: str) -> int:
    """Processes (GPUs) per node of one model's training job (a recall task model: one)."""
    entry = model_entries(config).get(name)
    return 1 if entry is None else int(entry.get("gpus", config.get("gpus", 1)))


def nodes(config: dict[str, Any], name: str) -> int:
    entry = model_entries(config).get(name)
    return 1 if entry is None else int(entry.get("nodes", config.get("nodes", 1)))


def model_spec(config: dict[str, Any], name: str, seed: int | None = None) -> dict[str, Any]:
    """Everything that determines one trained model: the input of `expe train`."""
    models = model_entries(config)
    if name not in models:
        raise ConfigError(f"models: no entry {name!r} (entries: {', '.join(models)})")
    entry = models[name]
    train = section_defaults("train")
    train.update(config.get("train", {}))
    train.update(entry.get("train", {}))
    train["betas"] = list(train["betas"])
    spec = {
        "name": name,
        "seed": seeds(config, name)[0] if seed is None else int(seed),
        "model": {**architecture(config, entry["architecture"], f"models.{name}.architecture"), "pe": dict(entry["pe"])},
        "train": train,
    }
    if entry.get("augment"):
        spec["augment"] = dict(entry["augment"])
    return spec


# ------------------------------------------------------------------ the recall study's task models

def slug(label: str) -> str:
    """A table label as a file-name part: 'ExPE (l = 1)' -> 'expe_l_1'."""
    return "_".join("".join(ch if ch.isalnum() else " " for ch in label.lower()).split())


def recall_models(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every task model of the recall study: name -> {task, label, pe, longer}. Names are
    recall-<task>-<slug of the label>, and recall-<task>-<slug>-x<factor> for the longer runs (trained
    only for the seeds that did not learn the task; the workflow decides after the first runs)."""
    rec = config.get("recall")
    if not rec:
        return {}
    out = {}
    for task in rec["tasks"]:
        for label, pe in rec["encodings"].items():
            base = f"recall-{task}-{slug(label)}"
            out[base] = {"task": task, "label": label, "pe": dict(pe), "longer": False}
            if rec["longer"]["enabled"]:
                out[f"{base}-x{rec['longer']['factor']}"] = {"task": task, "label": label, "pe": dict(pe), "longer": True}
    return out


def recall_spec(config: dict[str, Any], name: str, seed: int) -> dict[str, Any]:
    """The spec of one task model: the task's generator sizes, the recall architecture with the task's
    vocabulary, train = `train` <- recall.train <- recall.tasks.<task>.train (x factor steps when longer)."""
    rec, run = config["recall"], recall_models(config)[name]
    task = dict(rec["tasks"][run["task"]])
    train = section_defaults("train")
    train.update(config.get("train", {}))
    train.update(rec["train"])
    train.update(task.pop("train", {}) or {})
    train["betas"] = list(train["betas"])
    if run["longer"]:
        train["steps"] *= rec["longer"]["factor"]
    return {
        "name": name,
        "seed": int(seed),
        "model": {**architecture(config, rec["architecture"], "recall.architecture"), "pe": dict(run["pe"])},
        "train": train,
        "task": task,
    }


NOT_IDENTITY = ("log_every", "checkpoint_every", "trackers")  # train keys that never change the weights


def spec_identity(spec: dict[str, Any]) -> dict[str, Any]:
    """What determines a trained model's weights: its folder hash and its checkpoints are keyed by this."""
    out = {k: spec[k] for k in ("seed", "model", "train")}
    out["train"] = {k: v for k, v in spec["train"].items() if k not in NOT_IDENTITY}
    return {**out, **{k: spec[k] for k in ("task", "augment") if spec.get(k)}}


def parse_ref(ref: str) -> tuple[str, str]:
    """'model' or 'model@variant' -> (model, variant); the plain model is variant 'base'."""
    model, _, variant = ref.partition("@")
    return model, variant or "base"


def eval_variants(config: dict[str, Any], model: str) -> list[str]:
    """'base' plus every inference-time variant that lists this model."""
    variants = config.get("eval", {}).get("variants", {})
    return ["base"] + [v for v, spec in variants.items() if model in spec["models"]]


def variant_pe(config: dict[str, Any], variant: str) -> dict[str, Any]:
    """The encoding options an inference-time variant sets ({} for 'base')."""
    return {} if variant == "base" else dict(config["eval"]["variants"][variant]["pe"])


def variant_precision(config: dict[str, Any], variant: str) -> str:
    """The evaluation precision of a variant (eval.precision unless the variant sets one)."""
    own = None if variant == "base" else config["eval"]["variants"][variant].get("precision")
    return own or config["eval"]["precision"]


def table_models(config: dict[str, Any], tables: tuple[str, ...] | None = None) -> list[str]:
    """The model entries the rows of these tables (default: all) refer to, in row order."""
    out: list[str] = []
    for name, rows in config["tables"].items():
        if tables is not None and name not in tables:
            continue
        for ref in rows.values():
            m, _ = parse_ref(ref)
            if m not in out:
                out.append(m)
    return out


def labels(config: dict[str, Any]) -> dict[str, str]:
    """Model entry -> the first table label naming it (its plain, base-variant row)."""
    out: dict[str, str] = {}
    for rows in config["tables"].values():
        for label, ref in rows.items():
            m, v = parse_ref(ref)
            if v == "base":
                out.setdefault(m, label)
    for m in config.get("beyond", {}).get("bf16_training", []):
        out[m + BF16_SUFFIX] = f"{out.get(m, m)} (trained bf16)"
    for m in augmented_models(config):
        out[m + AUG_SUFFIX] = f"{out.get(m, m)} (copy-augmented)"
    return out


def beyond_models(config: dict[str, Any]) -> list[str]:
    """The models the probes run on (beyond.models, default: the Section 4.1 and large tables)."""
    chosen = config.get("beyond", {}).get("models")
    if chosen is not None:
        return list(chosen)
    return table_models(config, ("section41", "large"))


def retrieval_segment(L: int, segment: int | None) -> int:
    """Tokens of the repeated span A of the repeat-retrieval probe: beyond.retrieval.segment, or L/8."""
    return segment if segment is not None else max(2, L // 8)


def retrieval_prefix(L: int, prefix: int | None) -> int:
    """Tokens before the first copy of A: beyond.retrieval.prefix, or L/8."""
    return prefix if prefix is not None else max(1, L // 8)


def retrieval_window(L: int, distance: float, segment: int | None, prefix: int | None) -> int:
    """Tokens of one repeat-retrieval window [prefix][A][filler][A] whose second A starts D = distance x L
    tokens after the first; a window of at most L tokens is the probe's positive control (inside L)."""
    return retrieval_prefix(L, prefix) + int(round(distance * L)) + retrieval_segment(L, segment)


def precision_models(config: dict[str, Any]) -> list[str]:
    chosen = config.get("beyond", {}).get("precision", {}).get("models")
    base = list(chosen) if chosen is not None else beyond_models(config)
    return base + [m + BF16_SUFFIX for m in config.get("beyond", {}).get("bf16_training", []) if m + BF16_SUFFIX not in base]
