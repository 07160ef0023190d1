"""Adding an encoding is one registry entry plus its class: a new user's encoding (KERPLE-log, a learned
log-distance bias; Chi et al. 2022) goes through config validation, training (several steps), evaluation
beyond L and the tables without touching the package."""

import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from conftest import REPO, tiny_spec
from expe import config as C
from expe.errors import ConfigError
from expe.nn.encodings import PositionalEncoding
from expe.nn.registry import KEYS, REGISTRY, Entry, register


class KerpleLog(PositionalEncoding):
    """bias(i, j) = -r1_h * log(1 + r2_h * (i - j)) for j <= i, r1, r2 > 0 learned per head."""

    @classmethod
    def from_config(cls, cfg, **keys):
        return cls(cfg.n_head, **keys)

    def __init__(self, n_head: int, r_init: float = 1.0):
        super().__init__()
        self.raw = nn.Parameter(torch.full((2, n_head), r_init))

    def context(self, T, device, dtype):  # rebuilt every forward: it depends on trained parameters
        n = torch.arange(T, device=device, dtype=torch.float32)
        dist = (n[:, None] - n[None, :]).clamp(min=0)
        r1, r2 = F.softplus(self.raw)
        bias = -r1[:, None, None] * torch.log1p(r2[:, None, None] * dist)
        return bias.masked_fill(n[None, :] > n[:, None], float("-inf")).unsqueeze(0).to(dtype)

    def attn_bias(self, ctx=None):
        return ctx


@pytest.fixture
def kerple():
    KEYS["r_init"] = {"type": "number", "exclusiveMinimum": 0, "description": "KERPLE: initial r1, r2 (softplus)"}
    register("kerple_log", Entry(KerpleLog, ("r_init",), doc="Chi et al. 2022, log variant"))
    yield "kerple_log"
    REGISTRY.pop("kerple_log")
    KEYS.pop("r_init")


def test_a_registered_encoding_is_validated_trained_evaluated_and_tabled(kerple, shards, tmp_path):
    from expe.evaluation.extrapolation import evaluate
    from expe.report.tables import build_all
    from expe.training.loop import train

    cfg = C.load(REPO / "config" / "smoke.yaml")
    cfg["models"]["kerple"] = {"architecture": "tiny", "pe": {"name": kerple, "r_init": 0.5}}
    cfg["tables"]["section41"]["KERPLE-log"] = "kerple"
    cfg = C.validate(cfg)  # the schema knows the new name and key
    with pytest.raises(ConfigError, match="models.k2.pe.r_init: must be > 0"):
        C.validate({**cfg, "models": {**cfg["models"], "k2": {"architecture": "tiny", "pe": {"name": kerple, "r_init": 0}}}})

    index = {"run_name": "smoke", "config_file": "c.json", "data": "none", "speed": "none", "models": {}, "eval": {},
             "benchmarks": {}, "beyond": {}}
    for seed in (1, 2):
        spec = tiny_spec(pe={"name": kerple, "r_init": 0.5}, steps=4, checkpoint_every=4, log_every=2)
        spec["seed"] = seed
        train(spec, shards, tmp_path / f"m{seed}", tmp_path / f"c{seed}", progress=False)
        r = evaluate(tmp_path / f"m{seed}", shards, [1, 2], max_tokens=128, progress=False)
        (tmp_path / f"e{seed}.json").write_text(json.dumps(r))
        index["models"].setdefault("kerple", {})[str(seed)] = str(tmp_path / f"m{seed}")
        index["eval"].setdefault("kerple", {})[str(seed)] = {"base": str(tmp_path / f"e{seed}.json")}
    (tmp_path / "index.json").write_text(json.dumps(index))
    cfg["eval"]["multiples"] = [1, 2]
    build_all(cfg, "c.json", tmp_path / "index.json", tmp_path / "tables")
    lines = (tmp_path / "tables" / "section41.md").read_text().splitlines()
    header = [c.strip() for c in next(ln for ln in lines if ln.startswith("| Model")).strip("|").split("|")]
    row = dict(zip(header, [c.strip() for c in next(ln for ln in lines if "KERPLE-log" in ln).strip("|").split("|")]))
    assert " ± " in row["Loss ev=1"] and " ± " in row["Loss ev=2"]  # two seeds: a mean and an interval each
    assert row["ev=2 (paper)"] == "not in paper"
    assert "KERPLE-log" in (tmp_path / "tables" / "summary.md").read_text()  # the summary reads the config's labels
