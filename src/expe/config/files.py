"""Reading config files: strict YAML (a duplicate key is an error naming the file and line), merging
overrides, and the resolved config the workflow writes once (validated, defaults filled), which jobs
read without validating again."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import yaml

from expe.errors import ConfigError

RESOLVED = "expe_resolved_config"  # the key that marks a file written by `write_resolved`


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
# YAML 1.2 floats: PyYAML (YAML 1.1) reads `lr: 3e-4` as the text '3e-4' without this
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


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
    """A config file as jobs and commands use it: a resolved config (written by the workflow) as it is;
    a user's YAML validated, with `overrides` merged first."""
    from expe.config.checks import validate

    p = Path(path)
    if p.suffix == ".json" and p.exists():
        try:
            obj = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"config file {p} is not valid JSON ({e})") from None
        if isinstance(obj, dict) and RESOLVED in obj and not overrides:
            return obj[RESOLVED]
        cfg = obj
    else:
        cfg = read_yaml(p) or {}
    if overrides:
        cfg = deep_merge(cfg, overrides)
    return validate(cfg)


def resolved_document(config: dict[str, Any]) -> dict[str, Any]:
    """What the workflow writes: the validated config under one marker key (key order kept: it is the
    order of table rows)."""
    return {RESOLVED: config}


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def command_line_values(config: dict[str, Any]) -> dict[str, Any]:
    """Snakemake's `--config key=value` hands over text where the schema wants something else: every value
    inside a list or mapping (YAML's BaseLoader: `--config 'seeds=[1,2]'` gives ['1', '2']), and words
    such as null or false at the top. Where the schema does not accept text at a key, read the text as a
    YAML scalar (a number, true/false, null); where it accepts only text, a number Snakemake made of it
    (`run_name=2024`) becomes text again. Everything else is left for validation to judge."""
    from expe.config.schema import accepted_types, schema

    sch = schema()

    def scalar(text: str) -> Any:
        try:
            value = yaml.load(text, Loader=_StrictLoader)
        except yaml.YAMLError:
            return text
        return value if value is None or isinstance(value, (bool, int, float)) else text

    def walk(x: Any, path: tuple) -> Any:
        if isinstance(x, dict):
            return {k: walk(v, path + (k,)) for k, v in x.items()}
        if isinstance(x, list):
            return [walk(v, path + (i,)) for i, v in enumerate(x)]
        types = accepted_types(path, sch)
        if types is None:
            return x
        if isinstance(x, str) and "string" not in types:
            return scalar(x)
        if isinstance(x, int) and not isinstance(x, bool) and types == {"string"}:
            return str(x)
        return x

    return walk(config, ())


def dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


