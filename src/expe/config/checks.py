"""What a schema cannot check, once, before any job: references between sections, an encoding's own
keys, l <= d, window lengths against the held-out documents, learning rates, lm-eval task names.
Every problem is one line naming the key and what is allowed."""

from __future__ import annotations

import difflib
from typing import Any

from expe.config.resolve import (AUG_SUFFIX, BF16_SUFFIX, DATA_KEYS, augmented_models, eval_variants, gpus, model_spec,
                                 nodes, parse_ref, recall_models, recall_spec, retrieval_segment, retrieval_window,
                                 slug)
from expe.config.schema import check
from expe.errors import ConfigError


def validate(config: dict[str, Any], data_only: bool = False) -> dict[str, Any]:
    """Validate `config` in place (defaults filled) and return it; raise ConfigError on the first problem.

    data_only: the config holds only the keys of the data steps (seed, data, tokenizer)."""
    check(config, DATA_KEYS if data_only else None)
    _data(config)
    if not data_only:
        _models(config)
        _evaluation(config)
        _references(config)
        _recall(config)
        _benchmarks(config)
    return config


def _entries(config: dict[str, Any], where: str, names) -> None:
    for m in names or []:
        if m not in config["models"]:
            hint = difflib.get_close_matches(str(m), list(config["models"]), n=1)
            raise ConfigError(f"{where}: no model entry {m!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                              + f" (entries: {', '.join(config['models'])})")


def _models(config: dict[str, Any]) -> None:
    for name, m_entry in config["models"].items():
        where = f"models.{name}"
        for suffix, key in ((BF16_SUFFIX, "beyond.bf16_training"), (AUG_SUFFIX, "recall.augmented")):
            if name.endswith(suffix):
                raise ConfigError(f"{where}: names ending in {suffix!r} are reserved for {key}")
        if "seed" in m_entry and "seeds" in m_entry:
            raise ConfigError(f"{where}: give seeds or seed, not both")
        spec = model_spec(config, name)
        m, t = spec["model"], spec["train"]
        g = gpus(config, name) * nodes(config, name)
        if t["batch_size"] % g:
            raise ConfigError(f"{where}: train.batch_size {t['batch_size']} cannot be split over gpus: {g} "
                              f"(each micro-batch is split row-wise over the processes); use a multiple of {g}")
        if t["end_lr"] > t["lr"]:
            raise ConfigError(f"{where}: train.end_lr {t['end_lr']} is above train.lr {t['lr']} (the schedule decays "
                              "from lr to end_lr)")
        if m["d_model"] % m["n_head"]:
            raise ConfigError(f"{where}.architecture: n_head {m['n_head']} must divide d_model {m['d_model']}")
        _encoding(m["pe"], m["d_model"], m["n_head"], f"{where}.pe")


def _encoding(pe: dict[str, Any], d_model: int, n_head: int, where: str) -> None:
    """An encoding's own keys, l <= d, an even head size for RoPE."""
    from expe.nn.registry import entry as encoding

    e = encoding(pe["name"], f"{where}.name")
    for key in pe:
        if key != "name" and key not in e.keys:
            raise ConfigError(f"{where}.{key}: not a parameter of {pe['name']} (allowed: {', '.join(e.keys) or 'none'})")
    l = pe.get("l", e.defaults.get("l"))
    if l is not None and not 0 < l <= d_model:
        raise ConfigError(f"{where}.l: must satisfy 0 < l <= d_model ({d_model}), got {l}")
    if pe["name"] == "rope" and (d_model // n_head) % 2:
        raise ConfigError(f"{where}.name: rope needs an even head size, got {d_model // n_head}")
    _dca(pe, where)


def _recall(config: dict[str, Any]) -> None:
    """The recall study: task sizes against L, encodings, labels that name distinct models, augmented entries."""
    rec = config["recall"]
    for task, t in rec["tasks"].items():
        where = f"recall.tasks.{task}"
        need = {"copy": "segment", "mqar": "num_pairs"}[t["kind"]]
        other = {"copy": "num_pairs", "mqar": "segment"}[t["kind"]]
        if need not in t:
            raise ConfigError(f"{where}: a {t['kind']} task needs {need}")
        if other in t:
            raise ConfigError(f"{where}.{other}: not a size of a {t['kind']} task (it takes {need})")
        seq_len = {**rec["train"], **(t.get("train") or {})}["seq_len"]
        if t["kind"] == "copy" and 2 * t["segment"] > seq_len:
            raise ConfigError(f"{where}.segment: {t['segment']} too long for seq_len {seq_len} (need 2 x segment <= seq_len)")
        if t["kind"] == "mqar" and 4 * t["num_pairs"] > seq_len:
            raise ConfigError(f"{where}.num_pairs: {t['num_pairs']} too many for seq_len {seq_len} (need 4 x num_pairs <= seq_len)")
        if t["kind"] == "mqar" and t["vocab_size"] // 2 - 1 < t["num_pairs"]:
            raise ConfigError(f"{where}.vocab_size: {t['vocab_size']} too small for {t['num_pairs']} distinct keys "
                              "(need vocab_size // 2 - 1 >= num_pairs)")
    slugs: dict[str, str] = {}
    for label, pe in rec["encodings"].items():
        if slug(label) in slugs or not slug(label):
            raise ConfigError(f"recall.encodings: label {label!r} names the same model files as {slugs.get(slug(label))!r}; "
                              "use labels that differ in letters or digits")
        slugs[slug(label)] = label
    names = list(recall_models(config))
    if names:
        m = recall_spec(config, names[0], rec["seeds"][0])["model"]
        if m["d_model"] % m["n_head"]:
            raise ConfigError(f"recall.architecture: n_head {m['n_head']} must divide d_model {m['d_model']}")
        for label, pe in rec["encodings"].items():
            _encoding(pe, m["d_model"], m["n_head"], f"recall.encodings.{label}")
        t = recall_spec(config, names[0], rec["seeds"][0])["train"]
        if t["end_lr"] > t["lr"]:
            raise ConfigError(f"recall.train.end_lr: {t['end_lr']} is above recall.train.lr {t['lr']}")
    _entries(config, "recall.augmented.models", rec["augmented"]["models"])
    for name in augmented_models(config):
        L_lm = model_spec(config, name)["train"]["seq_len"]
        if 2 * rec["augmented"]["segment"] > L_lm:
            raise ConfigError(f"recall.augmented.segment: {rec['augmented']['segment']} too long for model {name}'s "
                              f"seq_len {L_lm} (need 2 x segment <= seq_len)")


def _dca(pe: dict[str, Any], where: str) -> None:
    c, w = pe.get("dca_chunk"), pe.get("dca_window")
    if w is not None and c is None:
        raise ConfigError(f"{where}.dca_window: needs dca_chunk (Dual Chunk Attention is off without it)")
    if c is not None and w is not None and not w < c:
        raise ConfigError(f"{where}.dca_window: must be < dca_chunk ({c}), got {w}")


def _evaluation(config: dict[str, Any]) -> None:
    from expe.nn.registry import REGISTRY

    models = config["models"]
    ev = config["eval"]
    for vname, var in ev["variants"].items():
        _entries(config, f"eval.variants.{vname}.models", var["models"])
        for model in var["models"]:
            enc = models[model]["pe"]["name"]
            allowed = REGISTRY[enc].inference_keys
            for key in var["pe"]:
                if key not in allowed:
                    raise ConfigError(f"eval.variants.{vname}.pe.{key}: not an inference-time option of {model}'s "
                                      f"encoding {enc} (allowed: {', '.join(allowed) or 'none'})")
            _dca({**models[model]["pe"], **var["pe"]}, f"eval.variants.{vname}.pe")
    data = config["data"]
    hold = data["test_min_tokens"] if data["test_min_tokens"] is not None else data["min_tokens"]
    bey = config["beyond"]
    sl = ev["sliding"]
    for name in models:
        L = model_spec(config, name)["train"]["seq_len"]
        needs = [("eval.multiples", k, k * L + 1) for k in ev["multiples"]]
        needs += [("eval.sliding.multiples", k, k * L + 1) for k in sl["multiples"]]
        needs += [("beyond.passkey.multiples", k, k * L + 1) for k in bey["passkey"]["multiples"]]
        needs += [("beyond.precision.multiples", k, k * L + 1) for k in bey["precision"]["multiples"]]
        r = bey["retrieval"]
        needs += [("beyond.retrieval.distances", d, retrieval_window(L, d, r["segment"], r["prefix"]) + 1)
                  for d in r["distances"]]
        seg = retrieval_segment(L, r["segment"])
        for d in r["distances"]:
            if int(round(d * L)) < seg:
                raise ConfigError(f"beyond.retrieval.distances: D={d}L is {int(round(d * L))} tokens for model {name} "
                                  f"(seq_len {L}), shorter than the repeated span ({seg} tokens, beyond.retrieval.segment): "
                                  "the copies would overlap")
        for key, k, tokens in needs:
            if tokens > hold:
                what = f"ev={k} needs windows of {tokens} tokens" if "distances" not in key else f"D={k}L needs {tokens} tokens"
                raise ConfigError(
                    f"{key}: {what} (model {name}, seq_len {L}) but test documents are only guaranteed {hold} "
                    f"(data.test_min_tokens / data.min_tokens); raise data.test_min_tokens to >= {tokens} or drop {k}")
        if sl["stride"] is not None and sl["multiples"] and sl["stride"] > min(sl["multiples"]) * L:
            raise ConfigError(f"eval.sliding.stride: {sl['stride']} is longer than the shortest sliding window "
                              f"({min(sl['multiples'])} x {L} tokens of model {name})")
    pk = bey["passkey"]
    if pk["keys"] == "words" and pk["pool"] < pk["candidates"]:
        raise ConfigError(f"beyond.passkey.pool: {pk['pool']} words cannot give {pk['candidates']} distinct candidates "
                          "(beyond.passkey.candidates); raise pool or lower candidates")
    _entries(config, "beyond.models", bey["models"])
    _entries(config, "beyond.precision.models", bey["precision"]["models"])
    _entries(config, "beyond.bf16_training", bey["bf16_training"])


def _references(config: dict[str, Any]) -> None:
    for table, rows in config["tables"].items():
        for row, ref in rows.items():
            model, variant = parse_ref(ref)
            _entries(config, f"tables.{table}.{row}", [model])
            if variant != "base" and variant not in eval_variants(config, model):
                raise ConfigError(f"tables.{table}.{row}: variant {variant!r} is not defined for {model} in eval.variants")
    for i, c in enumerate(config["stats"]["contrasts"]):
        for side in ("a", "b"):
            model, variant = parse_ref(c[side])
            _entries(config, f"stats.contrasts[{i}].{side}", [model])
            if variant != "base" and variant not in eval_variants(config, model):
                raise ConfigError(f"stats.contrasts[{i}].{side}: variant {variant!r} is not defined for {model} in "
                                  "eval.variants")


def _benchmarks(config: dict[str, Any]) -> None:
    """Task names against lm-eval's own task registry (read from its files: no lm-eval import)."""
    from expe.evaluation.task_names import known_tasks

    b = config["benchmarks"]
    if not b["tasks"]:
        return
    known = known_tasks(b["include_path"])
    if known is None:  # lm-eval not installed: the benchmark step says so itself
        return
    for task in b["tasks"]:
        if task not in known:
            hint = difflib.get_close_matches(task, sorted(known), n=1)
            raise ConfigError(f"benchmarks.tasks: {task!r} is not an lm-eval task"
                              + (f" (did you mean {hint[0]!r}?)" if hint else "")
                              + " (lm-eval's task list: lm_eval ls tasks; local tasks: benchmarks.include_path)")


def _data(config: dict[str, Any]) -> None:
    data = config["data"]
    if data["source"] in ("text_dir", "jsonl", "parquet") and not data["path"]:
        raise ConfigError(f"data.path: required for data.source {data['source']!r}")
    if config["tokenizer"]["type"] == "load" and not config["tokenizer"]["path"]:
        raise ConfigError("tokenizer.path: required when tokenizer.type is 'load'")
