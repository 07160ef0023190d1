"""The one registry of positional encodings: name -> implementation, the config keys it takes, which of
them may change at inference, and fixed arguments (the Table 7 ablations). Torch-free, so validating a
config (`snakemake -n`) never imports torch; the classes live in `expe.nn.encodings`.

The config schema's `models.<name>.pe` and `eval.variants.<name>.pe` sections are generated from this
file (`pe_schema`, `variant_pe_schema`): adding an encoding is one `register(...)` call plus its class.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any

from expe.errors import ConfigError

# Every encoding key, with its JSON-schema type and meaning (config/README.md shows these).
KEYS: dict[str, dict[str, Any]] = {
    "S": {"type": "number", "description": "ExPE start value S (METHOD.md; default 1.0)"},
    "theta": {"type": "number", "description": "ExPE step theta (default 1/L)"},
    "S_q": {"type": "number", "description": "ExQPE start value (default 1.0); Table 9's first ExQPE-only row, whose "
                                             "symbol the paper's text lost (our reading)"},
    "theta_q": {"type": "number", "description": "ExQPE step per round-robin increment (default l/L: ExPE's range); "
                                                 "Table 9's second ExQPE-only row (our reading)"},
    "l": {"type": "integer", "minimum": 1, "description": "dims overwritten (default d/8)"},
    "apply_to_value": {"type": "boolean", "description": "also overwrite the W_v input"},
    "scale": {"type": "number", "exclusiveMinimum": 0, "description": "inference scale s of theta (1.0: off)"},
    "base": {"type": "number", "exclusiveMinimum": 0, "description": "RoPE / sinusoidal base (10000)"},
    "scale_embeddings": {"type": "boolean", "description": "sinusoidal: token embeddings x sqrt(d) before the table is "
                                                           "added (Vaswani et al. 2017; default true)"},
    "interpolation": {"type": "number", "minimum": 1, "description": "RoPE position interpolation factor (1.0: off)"},
    "ntk_factor": {"type": "number", "minimum": 1, "description": "RoPE NTK-aware base scaling (1.0: off)"},
    "yarn_factor": {"type": "number", "minimum": 1, "description": "RoPE YaRN factor s (1.0: off)"},
    "dca_chunk": {"type": ["integer", "null"], "minimum": 2,
                  "description": "RoPE Dual Chunk Attention: the position span c (<= L; null: off)"},
    "dca_window": {"type": ["integer", "null"], "minimum": 0,
                   "description": "DCA local window w (< dca_chunk; null: c/8)"},
}


@dataclass(frozen=True)
class Entry:
    """impl: the class (or 'module:Class'), built by `impl.from_config(model_config, **keys)`."""

    impl: Any
    keys: tuple[str, ...] = ()
    inference_keys: tuple[str, ...] = ()
    defaults: dict[str, Any] = field(default_factory=dict)
    doc: str = ""

    def cls(self):
        if isinstance(self.impl, str):
            module, _, name = self.impl.partition(":")
            return getattr(importlib.import_module(module), name)
        return self.impl


REGISTRY: dict[str, Entry] = {}


def register(name: str, entry: Entry) -> Entry:
    for k in entry.keys:
        if k not in KEYS:
            raise ValueError(f"encoding {name!r}: key {k!r} has no schema in expe.nn.registry.KEYS")
    if not set(entry.inference_keys) <= set(entry.keys):
        raise ValueError(f"encoding {name!r}: inference keys must be among its keys")
    REGISTRY[name] = entry
    return entry


_ENC = "expe.nn.encodings:"
_EXPE = ("S", "theta", "l", "apply_to_value", "scale")
register("nope", Entry(_ENC + "NoPE", doc="no positional signal"))
register("sinusoidal", Entry(_ENC + "Sinusoidal", ("base", "scale_embeddings"), doc="Vaswani et al. 2017, added once"))
register("rope", Entry(_ENC + "RoPE", ("base", "interpolation", "ntk_factor", "yarn_factor", "dca_chunk", "dca_window"),
                       ("interpolation", "ntk_factor", "yarn_factor", "dca_chunk", "dca_window"),
                       doc="Su et al.; the Llama rows"))
register("alibi", Entry(_ENC + "ALiBi", doc="Press et al. 2022"))
register("expe", Entry(_ENC + "ExPE", _EXPE, ("scale",), doc="METHOD.md ExPE"))
register("exqpe", Entry(_ENC + "ExQPE", ("S_q", "theta_q", "l", "apply_to_value", "scale"), ("scale",),
                        doc="METHOD.md ExQPE"))
register("expe_p_stable", Entry(_ENC + "ExPEStable", _EXPE, ("scale",), doc="Table 7: p is stable"))
register("expe_l1", Entry(_ENC + "ExPE", _EXPE, ("scale",), {"l": 1}, doc="Table 7: l = 1"))
register("expe_learned_init", Entry(_ENC + "ExPE", _EXPE, ("scale",), {"learned": "init"},
                                    doc="Table 7: learned, initialised"))
register("expe_learned", Entry(_ENC + "ExPE", _EXPE, ("scale",), {"learned": "random"}, doc="Table 7: learned"))
register("expe_once", Entry(_ENC + "ExPEOnce", _EXPE, ("scale",), doc="Table 7: once"))


def entry(name: str, where: str = "pe.name") -> Entry:
    if name not in REGISTRY:
        hint = difflib.get_close_matches(str(name), list(REGISTRY), n=1)
        raise ConfigError(f"{where}: unknown encoding {name!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                          + f"; allowed: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def pe_schema() -> dict[str, Any]:
    """JSON schema of `models.<name>.pe`: the registry's names and the union of their keys (which key an
    encoding takes is checked in expe.config)."""
    keys = {k: KEYS[k] for e in REGISTRY.values() for k in e.keys}
    return {"type": "object", "required": ["name"], "additionalProperties": False,
            "properties": {"name": {"enum": list(REGISTRY), "description": "the encoding (expe.nn.registry)"}, **keys}}


def variant_pe_schema() -> dict[str, Any]:
    keys = {k: KEYS[k] for e in REGISTRY.values() for k in e.inference_keys}
    return {"type": "object", "additionalProperties": False, "properties": keys}


def parse_overrides(name: str, pairs: dict[str, str] | list[str]) -> dict[str, Any]:
    """KEY=VALUE strings (the CLI's --pe, lm-eval's model_args) -> typed inference options of encoding
    `name`, each checked against its schema: the door for values that do not come from a config."""
    if isinstance(pairs, list):
        kv = {}
        for p in pairs:
            key, sep, value = p.partition("=")
            if not sep:
                raise ConfigError(f"--pe: expected KEY=VALUE, got {p!r}")
            kv[key] = value
        pairs = kv
    e = entry(name)
    out: dict[str, Any] = {}
    for key, value in pairs.items():
        if key not in e.inference_keys:
            raise ConfigError(f"pe.{key}: not an inference-time option of {name} "
                              f"(allowed: {', '.join(e.inference_keys) or 'none'})")
        out[key] = _typed(key, value)
    return out


def _typed(key: str, value: Any) -> Any:
    import math

    s = KEYS[key]
    types = s["type"] if isinstance(s["type"], list) else [s["type"]]
    if value is None or (isinstance(value, str) and value.lower() in ("null", "none")):
        if "null" in types:
            return None
        raise ConfigError(f"pe.{key}: must be a number, got {value!r}")
    try:
        v = int(value) if "integer" in types and "number" not in types else float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"pe.{key}: must be a{'n integer' if 'integer' in types else ' number'}, got {value!r}") from None
    if isinstance(v, float) and not math.isfinite(v):
        raise ConfigError(f"pe.{key}: must be finite, got {value!r}")
    if "exclusiveMinimum" in s and not v > s["exclusiveMinimum"]:
        raise ConfigError(f"pe.{key}: must be > {s['exclusiveMinimum']}, got {value!r}")
    if "minimum" in s and not v >= s["minimum"]:
        raise ConfigError(f"pe.{key}: must be >= {s['minimum']}, got {value!r}")
    return v
