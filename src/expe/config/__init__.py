"""Configuration: the schema (every key, default and allowed value: `schema.yaml`), reading and
validating a config once, and resolving a model entry into the spec that training runs. Imports no
torch, so `snakemake -n` stays light.

    schema.py   the schema with the registry-derived parts, validation with defaults, config/README.md
    files.py    strict YAML, merging, the resolved config jobs read
    checks.py   what the schema cannot check (one line per problem)
    resolve.py  model entries, seeds, specs, table references
"""

from expe.config.checks import validate
from expe.config.files import command_line_values, deep_merge, dumps, load, read_yaml, resolved_document
from expe.config.resolve import (AUG_SUFFIX, BF16_SUFFIX, DATA_KEYS, architecture, augmented_models, beyond_models,
                                 eval_variants, gpus, labels, model_entries, model_spec, nodes, parse_ref,
                                 precision_models, recall_models, recall_spec, retrieval_prefix, retrieval_segment,
                                 retrieval_window, seeds, slug, spec_identity, table_models, variant_pe,
                                 variant_precision)
from expe.config.schema import default, markdown as schema_markdown, schema, section_defaults

__all__ = ["validate", "command_line_values", "load", "read_yaml", "deep_merge", "dumps", "resolved_document", "AUG_SUFFIX", "BF16_SUFFIX", "DATA_KEYS",
           "augmented_models", "recall_models", "recall_spec", "slug",
           "architecture", "beyond_models", "eval_variants", "gpus", "labels", "model_entries", "model_spec", "nodes",
           "parse_ref", "precision_models", "retrieval_prefix", "retrieval_segment", "retrieval_window", "seeds",
           "spec_identity", "table_models", "variant_pe", "variant_precision", "default", "schema_markdown",
           "schema", "section_defaults"]
