"""The config schema (`schema.yaml` beside this file) with the parts derived from code filled in: the
encodings' names and keys (expe.nn.registry), the preset names (expe.nn.presets), and `train` without
defaults for per-entry overrides. Validation fills the schema's defaults; every error is one line
naming the key and what is allowed. `config/README.md` is generated from it (`markdown`)."""

from __future__ import annotations

import copy
import difflib
import json
from functools import lru_cache
from importlib import resources
from typing import Any

import jsonschema
import yaml

from expe.errors import ConfigError


@lru_cache(maxsize=1)
def _file() -> dict[str, Any]:
    return yaml.safe_load(resources.files("expe.config").joinpath("schema.yaml").read_text())


def schema() -> dict[str, Any]:
    """The full schema, built afresh (a test may register an encoding)."""
    from expe.nn.presets import PRESETS
    from expe.nn.registry import pe_schema, variant_pe_schema

    sch = copy.deepcopy(_file())
    defs = sch["definitions"]
    defs["pe"] = pe_schema()
    defs["variant_pe"] = variant_pe_schema()
    # a model entry's `train` overrides the top-level one: no defaults of its own (they would win)
    defs["train_override"] = {**defs["train"], "properties": {
        k: {kk: vv for kk, vv in v.items() if kk != "default"} for k, v in defs["train"]["properties"].items()}}
    sch["properties"]["architectures"]["additionalProperties"]["properties"]["preset"]["enum"] = list(PRESETS)
    return sch


def _with_defaults(validator_class):
    """jsonschema validator that fills `default` values into the instance (as Snakemake does)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, sch):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, sch)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft7Validator)


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def describe(err: jsonschema.ValidationError) -> str:
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
        hint = difflib.get_close_matches(str(err.instance), [str(x) for x in kind], n=1)
        return (f"{where}: {err.instance!r} is not allowed" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                + f" (allowed: {', '.join(map(str, kind))})")
    if v == "type":
        want = " or ".join(kind) if isinstance(kind, list) else kind
        hint = ""
        if "number" in str(kind) and isinstance(err.instance, str):
            try:
                float(err.instance)
                hint = f" (YAML 1.1 reads {err.instance} as text: write it with a decimal point, e.g. 3.0e-4)"
            except ValueError:
                pass
        return f"{where}: must be of type {want}, got {err.instance!r}{hint}"
    if v == "required":
        missing = [k for k in kind if k not in err.instance]
        return f"{where}: missing required key {missing[0]!r}"
    if v in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        op = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}[v]
        return f"{where}: must be {op} {kind}, got {err.instance!r}"
    if v == "pattern":
        return f"{where}: {err.instance!r} must match {kind}"
    if v in ("oneOf", "anyOf") and err.context:  # e.g. a list or null: say what is wrong with the value itself
        nullable = any(b.get("type") == "null" for b in kind)
        subs = [e for e in err.context if not (e.validator == "type" and e.validator_value == "null")]
        if subs:
            return describe(jsonschema.exceptions.best_match(subs)) + (f" ({where} may also be null)" if nullable else "")
    if v == "uniqueItems":
        return f"{where}: {err.instance!r} has an item twice (each must appear once)"
    if v == "minItems":
        return f"{where}: {err.instance!r} needs at least {kind} item{'s' * (kind != 1)}"
    return f"{where}: {err.message}"


def check(config: Any, only: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Validate `config` against the schema in place, filling defaults; `only`: the top-level keys to check
    (the data steps' subset). Raises ConfigError on the most specific problem."""
    if not isinstance(config, dict):
        raise ConfigError("config: must be a mapping of keys to values")
    sch = schema()
    if only is not None:
        sch["required"] = []
        sch["properties"] = {k: v for k, v in sch["properties"].items() if k in only}
    errors = list(_Validator(sch).iter_errors(config))
    if errors:
        raise ConfigError(describe(max(errors, key=lambda e: len(e.absolute_path))))
    return config


def _deref(sch: dict[str, Any], n: dict[str, Any]) -> dict[str, Any]:
    """`n` with its $ref (to the schema's definitions) followed, its own keys on top."""
    while "$ref" in n:
        n = {**sch["definitions"][n["$ref"].split("/")[-1]], **{k: v for k, v in n.items() if k != "$ref"}}
    return n


def _alternatives(sch: dict[str, Any], node: Any) -> list[dict[str, Any]]:
    """`node` with its $ref resolved and its oneOf / anyOf expanded: the schemas a value there may follow."""
    out, todo = [], [node]
    while todo:
        n = todo.pop()
        if not isinstance(n, dict):
            continue
        n = _deref(sch, n)
        alts = n.get("oneOf", []) + n.get("anyOf", [])
        if alts:
            base = {k: v for k, v in n.items() if k not in ("oneOf", "anyOf")}
            todo += [{**base, **a} for a in alts]
        else:
            out.append(n)
    return out


JSON_TYPES = {str: "string", bool: "boolean", int: "integer", float: "number", type(None): "null",
              list: "array", dict: "object"}


def accepted_types(path: tuple, sch: dict[str, Any] | None = None) -> set[str] | None:
    """The JSON types the schema accepts at `path` (keys and list indices, e.g. ("seeds", 0)); None where
    it does not constrain the type or does not know the key (validation then says what is wrong)."""
    sch = sch or schema()
    nodes = _alternatives(sch, sch)
    for key in path:
        nxt = []
        for n in nodes:
            if isinstance(key, int):
                child = n.get("items")
            else:
                child = n.get("properties", {}).get(key, n.get("additionalProperties"))
            nxt += _alternatives(sch, child)
        nodes = nxt
        if not nodes:
            return None
    types: set[str] = set()
    for n in nodes:
        if "enum" in n:
            types |= {JSON_TYPES.get(type(e), "string") for e in n["enum"]}
        elif "type" in n:
            types |= set(n["type"] if isinstance(n["type"], list) else [n["type"]])
        else:
            return None
    if "number" in types:
        types.add("integer")
    return types


def node(dotted: str) -> dict[str, Any]:
    """The schema of one key of the file, e.g. 'eval.multiples' or 'train.lr' ($refs followed)."""
    sch = _file()
    cur: dict[str, Any] = {"properties": sch["properties"]}
    for part in dotted.split("."):
        cur = cur["properties"][part]
        cur = _deref(sch, cur)
    return cur


def default(dotted: str) -> Any:
    """The schema's default of one key (what argparse and TrainConfig use)."""
    return copy.deepcopy(node(dotted).get("default"))  # a copy: callers may change it


def section_defaults(dotted: str) -> dict[str, Any]:
    """Every default of one mapping section, e.g. 'train'."""
    return {k: copy.deepcopy(v["default"]) for k, v in node(dotted)["properties"].items() if "default" in v}


def markdown() -> str:
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

    def walk(props: dict, prefix: str) -> None:
        for key, s in props.items():
            ref = s.get("$ref", "").split("/")[-1]
            sub = sch["definitions"].get(ref, {})
            if "properties" in sub:
                desc = s.get("description", sub.get("description", ""))
                rows.append(f"| `{prefix}{key}` | mapping | | {desc} |")
                walk(sub["properties"], f"{prefix}{key}.")
                continue
            default_ = json.dumps(s["default"]) if "default" in s else ""
            rows.append(f"| `{prefix}{key}` | {typ(s)} | {default_} | {s.get('description', sub.get('description', ''))} |")
            if "properties" in s:
                walk(s["properties"], f"{prefix}{key}.")
            ap = s.get("additionalProperties")
            if isinstance(ap, dict) and "properties" in ap:
                walk(ap["properties"], f"{prefix}{key}.<name>.")

    walk(sch["properties"], "")
    from expe.nn.registry import REGISTRY

    enc = [f"| `{n}` | {', '.join(f'`{k}`' for k in e.keys) or '—'} | {', '.join(f'`{k}`' for k in e.inference_keys) or '—'} "
           f"| {e.doc} |" for n, e in REGISTRY.items()]
    return "\n".join([
        "# Configuration keys",
        "",
        "Generated from `src/expe/config/schema.yaml` (linked as `workflow/schemas/config.schema.yaml`) and the",
        "encoding registry `src/expe/nn/registry.py` by `expe config-doc` (a test keeps this file in step). A",
        "config is validated once, before any job runs; defaults are filled from the schema; an unknown or",
        "misspelt key is a one-line error naming it. `models.<name>.train` takes the keys of `train`.",
        "",
        "| key | type | default | description |",
        "| --- | --- | --- | --- |",
        *rows,
        "",
        "## Encodings (`models.<name>.pe`)",
        "",
        "| `name` | keys | inference-time keys (`eval.variants.<name>.pe`) | what |",
        "| --- | --- | --- | --- |",
        *enc,
        "",
    ])
