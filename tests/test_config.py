"""The configuration is one source: the schema holds every default and allowed value; TrainConfig, the
CLI and config/README.md derive from it; the encoding names and keys come from the registry; and
reading a config imports no torch."""

import subprocess
import sys

import pytest

from conftest import REPO
from expe import config as C
from expe.config.schema import section_defaults
from expe.errors import ConfigError
from expe.nn.registry import REGISTRY, pe_schema


def test_reading_and_validating_a_config_imports_no_torch():
    code = ("import sys, expe.config as C; from expe.workflow import Plan; "
            "Plan(C.load('config/config.yaml')); print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "False"


def test_train_config_fields_and_defaults_are_the_schemas():
    from expe.training.config import TrainConfig

    assert TrainConfig().to_dict() == section_defaults("train")
    assert TrainConfig(steps=7).steps == 7


def test_cli_defaults_are_the_schemas():
    from expe.cli import build_parser

    args = build_parser().parse_args(["evaluate", "--model-dir", "m", "--data", "d", "--out", "o"])
    assert args.multiples == C.default("eval.multiples") and args.batch_size == C.default("eval.batch_size")
    with pytest.raises(SystemExit):  # argparse `choices` from the schema's enum
        build_parser().parse_args(["evaluate", "--model-dir", "m", "--data", "d", "--out", "o", "--precision", "fp8"])


def test_the_schema_names_exactly_the_registered_encodings_and_their_keys():
    sch = C.schema()
    assert sch["definitions"]["pe"]["properties"]["name"]["enum"] == list(REGISTRY)
    keys = {k for e in REGISTRY.values() for k in e.keys}
    assert set(pe_schema()["properties"]) == keys | {"name"}


def test_a_model_entry_train_override_does_not_bring_back_the_defaults():
    cfg = C.load(REPO / "config" / "config.yaml", {"models": {"expe": {"architecture": "small", "pe": {"name": "expe"},
                                                                     "train": {"precision": "bf16"}}}})
    spec = C.model_spec(cfg, "expe")
    assert spec["train"]["steps"] == cfg["train"]["steps"] != section_defaults("train")["steps"]
    assert spec["train"]["precision"] == "bf16"


def test_yaml_numbers_in_exponent_form_are_numbers(tmp_path):
    (tmp_path / "c.yaml").write_text("train: {lr: 3e-4, end_lr: 1e-5}\n")
    assert C.read_yaml(tmp_path / "c.yaml") == {"train": {"lr": 3e-4, "end_lr": 1e-5}}


def test_a_number_written_as_text_gets_a_hint_about_yaml():
    with pytest.raises(ConfigError, match=r"train.lr: must be of type number, got '3e-4' \(YAML 1.1 reads 3e-4 as text"):
        C.validate({"train": {"lr": "3e-4"}, "models": {"m": {"architecture": "cpu-small", "pe": {"name": "nope"}}}})


def test_a_resolved_config_is_read_as_it_is_and_a_user_file_is_validated(tmp_path):
    import json

    cfg = C.load(REPO / "config" / "smoke.yaml")
    (tmp_path / "resolved.json").write_text(json.dumps(C.resolved_document(cfg)))
    assert C.load(tmp_path / "resolved.json") == cfg
    (tmp_path / "user.json").write_text(json.dumps({"models": {"m": {"architecture": "cpu-small", "pe": {"name": "x"}}}}))
    with pytest.raises(ConfigError, match="models.m.pe.name: 'x' is not allowed"):
        C.load(tmp_path / "user.json")


M = {"m": {"architecture": "cpu-small", "pe": {"name": "nope"}}}


@pytest.mark.parametrize("seeds, message", [
    (2, "seeds: must be of type array, got 2 (seeds may also be null)"),
    ([], "seeds: [] needs at least 1 item"),
    ([1, 1], "seeds: [1, 1] has an item twice"),
    ([1.5], "seeds.0: must be of type integer, got 1.5"),
    ([-1], "seeds.0: must be >= 0, got -1"),  # numpy's generators take no negative seed
])
def test_a_bad_seeds_list_says_what_is_wrong_with_it(seeds, message):
    with pytest.raises(ConfigError) as e:
        C.validate({"seeds": seeds, "models": M})
    assert str(e.value).startswith(message)


def test_command_line_values_are_read_as_the_schema_wants_them():
    # what Snakemake hands over for --config 'seeds=[1,2]' 'train={lr: 3e-4, compile: true}' run_name=x ...
    given = {"seeds": ["1", "2"], "train": {"lr": "3e-4", "compile": "true", "precision": "fp32"}, "run_name": "x",
             "eval": {"multiples": ["1", "2"], "max_tokens": "null"}}
    assert C.command_line_values(given) == {"seeds": [1, 2], "train": {"lr": 3e-4, "compile": True, "precision": "fp32"},
                                            "run_name": "x", "eval": {"multiples": [1, 2], "max_tokens": None}}
    # text stays text where the schema takes text, whatever it looks like; top-level words are read too
    given = {"data": {"path": "2024"}, "beyond": {"bf16_training": ["no"]}, "run_name": 2024, "seeds": "null",
             "download_locally": "false", "models": {"no": {"architecture": "cpu-small", "pe": {"name": "nope"}}}}
    assert C.command_line_values(given) == {
        "data": {"path": "2024"}, "beyond": {"bf16_training": ["no"]}, "run_name": "2024", "seeds": None,
        "download_locally": False, "models": {"no": {"architecture": "cpu-small", "pe": {"name": "nope"}}}}
    assert C.command_line_values({"modles": {"x": "1"}}) == {"modles": {"x": "1"}}  # unknown: validation names it
    smoke = C.read_yaml(REPO / "config" / "smoke.yaml")
    assert C.validate(C.deep_merge(smoke, C.command_line_values({"seeds": ["1", "2"]})))["seeds"] == [1, 2]
