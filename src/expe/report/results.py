"""The one tidy reader: every number the tables and plots use, read from the result files that the
workflow's index names (results/<run>/index/<hash>.json), with the file each came from and its sha256.

`Results.df`, one row per number: model entry, seed, variant, metric, ev, value, the windows /
documents / tokens behind it. Metrics: loss (the paper's, non-overlapping windows), loss_within_L,
loss_beyond_L, sliding_loss, train_seconds, final_train_loss, step_ms (the `speed` rule),
<task>_acc / _acc_norm. The per-document sums the paired statistics need stay in memory
(`Results.per_doc`).

`Results.context_curve`, how much of the training window a model uses: the loss at ev = 1 by
tokens of context c = 1 .. L (the per-position curve of every evaluated window, unbinned; the
committed `per_position` list keeps its bins of L/8).

`Results.probes`, the beyond-the-paper study: model, seed, probe (retrieval, passkey,
precision:<dtype>), metric, x (distance or ev), value, n.

`Results.recall`, the recall study's task models (index key "recall"): task, label (the encoding),
model, run (first, longer), seed, kind ("in distribution", "inside L", "far position", "far
distance"), ev, window, distance, first_start, correct / total scored tokens, sequences, exact
(sequences with every scored token right), value (accuracy), steps, chance. `Results.learned`: per
task, which seeds learned it inside L (the file that decided the longer runs).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from expe.io import read_json, sha256_file

COLUMNS = ["model", "seed", "variant", "metric", "ev", "value", "windows", "docs", "tokens", "source", "sha256"]
PROBE_COLUMNS = ["model", "seed", "probe", "metric", "x", "value", "n", "source", "sha256"]
RECALL_COLUMNS = ["task", "label", "model", "run", "seed", "kind", "ev", "window", "distance", "first_start", "correct",
                  "total", "sequences", "exact", "value", "steps", "chance", "source", "sha256"]


class Results:
    """The tidy data of one run plus what tables need besides (configs of trained models, speed,
    per-document sums, reasons why something is missing)."""

    def __init__(self, index: dict[str, Any] | str | Path, root: str | Path = "."):
        self.index = read_json(index) if isinstance(index, (str, Path)) else index
        self.root = Path(root)
        self._sha: dict[str, str] = {}
        self.per_doc: dict[tuple, dict[int, tuple[float, int]]] = {}  # (model, seed, variant, metric, ev) -> doc -> (sum, n)
        self.per_position: list[dict[str, Any]] = []
        self.context_curve: list[dict[str, Any]] = []  # ev = 1, one row per (model, seed, variant, context)
        self.missing: dict[tuple[str, str], str] = {}  # (model, variant) -> why
        self.benchmark_reasons: dict[tuple[str, str, str], str] = {}
        self.model_configs: dict[tuple[str, str], dict] = {}
        rows: list[dict[str, Any]] = []
        self._read_models(rows)
        self._read_evals(rows)
        self._read_benchmarks(rows)
        self._read_speed(rows)
        self.df = pd.DataFrame(rows, columns=COLUMNS)
        probe_rows: list[dict[str, Any]] = []
        self._read_probes(probe_rows)
        self.probes = pd.DataFrame(probe_rows, columns=PROBE_COLUMNS)
        self.learned: dict[str, dict] = {}
        recall_rows: list[dict[str, Any]] = []
        self._read_recall(recall_rows)
        self.recall = pd.DataFrame(recall_rows, columns=RECALL_COLUMNS)

    # ------------------------------------------------------------------ helpers
    def path(self, rel: str) -> Path:
        return self.root / rel

    def sha(self, rel: str) -> str:
        if rel not in self._sha:
            self._sha[rel] = sha256_file(self.path(rel))
        return self._sha[rel]

    def _json(self, rel: str) -> dict | None:
        p = self.path(rel)
        if not p.exists():
            return None
        try:
            return json.loads(p.read_text())
        except json.JSONDecodeError:
            return None

    def seeds(self, model: str) -> list[str]:
        return list(self.index["models"].get(model, {}))

    # ------------------------------------------------------------------ readers
    def _read_models(self, rows):
        for model, by_seed in self.index["models"].items():
            for seed, d in by_seed.items():
                cfg = self._json(f"{d}/config.json")
                if cfg is None:
                    continue
                self.model_configs[(model, seed)] = cfg
                src = f"{d}/config.json"
                for metric in ("train_seconds", "final_train_loss"):
                    rows.append(dict(model=model, seed=int(seed), variant="base", metric=metric, ev=None,
                                     value=cfg[metric], windows=None, docs=None, tokens=cfg["tokens"], source=src,
                                     sha256=self.sha(src)))

    def _read_evals(self, rows):
        for model, by_seed in self.index["eval"].items():
            for seed, by_variant in by_seed.items():
                for variant, rel in by_variant.items():
                    r = self._json(rel)
                    if r is None:
                        self.missing[(model, variant)] = "not run (no evaluation result)"
                        continue
                    sha = self.sha(rel)
                    base = dict(model=model, seed=int(seed), variant=variant, source=rel, sha256=sha)
                    L = r["train_length"]
                    for x in r["results"]:
                        ev = x["ev"]
                        rows.append({**base, "metric": "loss", "ev": ev, "value": x["loss"], "windows": x["windows"],
                                     "docs": x["docs"], "tokens": x["tokens"]})
                        rows.append({**base, "metric": "loss_within_L", "ev": ev, "value": x["loss_within_L"],
                                     "windows": x["windows"], "docs": x["docs"], "tokens": x["windows"] * min(L, x["length"])})
                        if x.get("loss_beyond_L") is not None:
                            rows.append({**base, "metric": "loss_beyond_L", "ev": ev, "value": x["loss_beyond_L"],
                                         "windows": x["windows"], "docs": x["docs"], "tokens": x["tokens_beyond_L"]})
                        key = (model, seed, variant, "loss", ev)
                        self.per_doc[key] = {d["doc"]: (d["loss_sum"], d["tokens"]) for d in x["per_doc"]}
                        if "beyond_tokens" in (x["per_doc"][0] if x["per_doc"] else {}):
                            self.per_doc[(model, seed, variant, "loss_beyond_L", ev)] = {
                                d["doc"]: (d["beyond_loss_sum"], d["beyond_tokens"]) for d in x["per_doc"]}
                        pp = np.asarray(x["per_position"])
                        if ev == 1:  # per_position[j] scores token j + 1 of the window: j + 1 tokens of context
                            self.context_curve += [dict(model=model, seed=int(seed), variant=variant, train_length=L,
                                                        context=j + 1, loss=float(v), windows=x["windows"], source=rel)
                                                   for j, v in enumerate(pp)]
                        width = max(1, L // 8)  # committed curves: bins of L/8 positions
                        for start in range(0, len(pp), width):
                            self.per_position.append(dict(model=model, seed=int(seed), variant=variant, ev=ev,
                                                          train_length=L, position_start=start,
                                                          position_end=min(start + width, len(pp)) - 1,
                                                          loss=round(float(pp[start : start + width].mean()), 5),
                                                          source=rel))
                    for x in r.get("sliding", []):
                        rows.append({**base, "metric": "sliding_loss", "ev": x["ev"], "value": x["loss"],
                                     "windows": x["windows"], "docs": x["docs"], "tokens": x["tokens"]})
                        self.per_doc[(model, seed, variant, "sliding_loss", x["ev"])] = {
                            d["doc"]: (d["loss_sum"], d["tokens"]) for d in x["per_doc"]}

    def _read_benchmarks(self, rows):
        for model, by_seed in self.index.get("benchmarks", {}).items():
            for seed, by_variant in by_seed.items():
                for variant, rel in by_variant.items():
                    r = self._json(rel)
                    if r is None:
                        self.benchmark_reasons[(model, variant, "*")] = "not run (no benchmark result)"
                        continue
                    for task, t in r["tasks"].items():
                        if t["status"] != "ok":
                            self.benchmark_reasons[(model, variant, task)] = t["reason"]
                            continue
                        for metric in ("acc", "acc_norm"):
                            if t.get(metric) is not None:
                                rows.append(dict(model=model, seed=int(seed), variant=variant, metric=f"{task}_{metric}",
                                                 ev=None, value=t[metric], windows=None, docs=None,
                                                 tokens=t.get("n_samples"), source=rel, sha256=self.sha(rel)))

    def _read_speed(self, rows):
        rel = self.index.get("speed")
        r = self._json(rel) if rel else None
        self.speed = r
        if r is None:
            return
        sha = self.sha(rel)
        for model, m in r["models"].items():
            for i, ms in enumerate(m["step_ms"]):
                rows.append(dict(model=model, seed=None, variant="base", metric="step_ms", ev=i, value=ms,
                                 windows=None, docs=None, tokens=m["tokens_per_step"], source=rel, sha256=sha))

    def _read_probes(self, rows):
        b = self.index.get("beyond", {})
        for m, by_seed in b.get("retrieval", {}).items():
            for seed, rel in by_seed.items():
                r = self._json(rel)
                for x in (r or {}).get("results", []):
                    for metric in ("gain_vs_control", "gain_vs_first", "loss_first", "loss_second", "loss_control"):
                        rows.append(dict(model=m, seed=int(seed), probe="retrieval", metric=metric, x=x["distance_L"],
                                         value=x[metric], n=x["spans"], source=rel, sha256=self.sha(rel)))
        for m, by_seed in b.get("passkey", {}).items():
            for seed, rel in by_seed.items():
                r = self._json(rel)
                for x in (r or {}).get("results", []):
                    if x.get("status", "ok") != "ok":
                        rows.append(dict(model=m, seed=int(seed), probe="passkey", metric="status", x=x["ev"],
                                         value=x["status"], n=0, source=rel, sha256=self.sha(rel)))
                        continue
                    for metric in ("accuracy", "greedy_exact", "mean_rank"):
                        rows.append(dict(model=m, seed=int(seed), probe="passkey", metric=metric, x=x["ev"],
                                         value=x[metric], n=x["trials"], source=rel, sha256=self.sha(rel)))
        for m, by_seed in b.get("precision", {}).items():
            for seed, by_prec in by_seed.items():
                for prec, rel in by_prec.items():
                    r = self._json(rel)
                    for x in (r or {}).get("results", []):
                        rows.append(dict(model=m, seed=int(seed), probe=f"precision:{prec}", metric="loss", x=x["ev"],
                                         value=x["loss"], n=x["tokens"], source=rel, sha256=self.sha(rel)))

    def _read_recall(self, rows):
        for task, t in self.index.get("recall", {}).items():
            learned = self._json(t["learned"])
            if learned is not None:
                self.learned[task] = learned
            for run, by_label in t["runs"].items():
                for label, r in by_label.items():
                    for seed, rel in r["seeds"].items():
                        res = self._json(rel)
                        if res is None:
                            continue
                        base = dict(task=task, label=label, model=r["model"], run=run, seed=int(seed), steps=res["steps"],
                                    chance=res["chance"], source=rel, sha256=self.sha(rel))
                        L = res["train_length"]
                        x = res["in_distribution"]
                        rows.append({**base, "kind": "in distribution", "ev": 1, "window": L, "distance": None,
                                     "first_start": None, "value": x["accuracy"],
                                     **{k: x[k] for k in ("correct", "total", "sequences", "exact")}})
                        for c in res["cells"]:
                            rows.append({**base, "value": c["accuracy"], **{k: c[k] for k in (
                                "kind", "ev", "window", "distance", "first_start", "correct", "total", "sequences", "exact")}})

    # ------------------------------------------------------------------ queries
    def values(self, model: str, variant: str, metric: str, ev=None) -> pd.Series:
        df = self.df
        sel = (df.model == model) & (df.variant == variant) & (df.metric == metric)
        if ev is not None:
            sel &= df.ev == ev
        return df.loc[sel, "value"]

    def seed_docs(self, model: str, variant: str, metric: str, ev: int) -> dict[int, dict[int, tuple[float, int]]]:
        """seed id -> document id -> (loss sum, tokens): what paired differences pair by (stats.py)."""
        return {int(s): self.per_doc[(model, s, variant, metric, ev)] for s in self.seeds(model)
                if (model, s, variant, metric, ev) in self.per_doc}

    def context_losses(self, model: str, variant: str) -> dict[int, np.ndarray]:
        """seed -> loss at ev = 1 by tokens of context (index c - 1 for c = 1 .. L)."""
        out: dict[int, list[tuple[int, float]]] = {}
        for r in self.context_curve:
            if r["model"] == model and r["variant"] == variant:
                out.setdefault(r["seed"], []).append((r["context"], r["loss"]))
        return {s: np.asarray([v for _, v in sorted(rows)]) for s, rows in sorted(out.items())}

    def model_config(self, model: str) -> dict | None:
        for (m, _), cfg in sorted(self.model_configs.items()):
            if m == model:
                return cfg
        return None

    def source_of(self, model: str, variant: str, kind: str = "eval") -> str:
        by_seed = self.index.get(kind, {}).get(model, {})
        files = sorted({v[variant] for v in by_seed.values() if variant in v})
        return ";".join(files)
