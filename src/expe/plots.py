"""Figures for the paper / reproduction report, as PNG and PDF (seaborn)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .config import parse_ref  # noqa: E402
from .io import atomic_path, ensure_dir  # noqa: E402

PANELS = [("section41", "Section 4.1 (+ NoPE, ALiBi)"), ("ablations", "Ablations (Table 7)"),
          ("large", "Section 4.2 (Llama architecture)"), ("scaling", "Section 4.3 (inference scaling)")]


def _save(fig, out: Path, name: str) -> None:
    for ext in ("png", "pdf"):
        with atomic_path(out / f"{name}.{ext}") as tmp:
            fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight")
    plt.close(fig)


def _load_eval(results: Path, ref: str) -> dict | None:
    model, variant = parse_ref(ref)
    p = results / "eval" / model / f"{variant}.json"
    return json.loads(p.read_text()) if p.exists() else None


def _finish_panel(ax, drawn: bool, title: str, xlabel: str, ylabel: str) -> None:
    """Log2 x axis and legend when something was drawn, else say why the panel is empty."""
    if drawn:
        ax.set_xscale("log", base=2)
        ax.legend(fontsize=6, title=None)
    else:
        ax.text(0.5, 0.5, "not run: no results", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)


def loss_vs_length(config: dict, results: Path, out: Path) -> None:
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.6), sharey=False)
    for ax, (table, title) in zip(axes, PANELS):
        rows = []
        for label, ref in config["tables"][table].items():
            r = _load_eval(results, ref)
            for row in (r or {}).get("results", []):
                rows.append({"model": label, "length": row["length"], "loss": row["loss"]})
        if rows:
            df = pd.DataFrame(rows)
            sns.lineplot(df, x="length", y="loss", hue="model", marker="o", ax=ax)
            ax.axvline(min(df["length"]), color="grey", ls=":", lw=1)  # the training length
        _finish_panel(ax, bool(rows), title, "evaluation length (tokens)", "loss (nats)")
    fig.suptitle("Loss against evaluation length (dotted: training length)", fontsize=10)
    _save(fig, out, "loss_vs_length")


def per_position(config: dict, results: Path, out: Path) -> None:
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.6))
    for ax, (table, title) in zip(axes, PANELS):
        drawn = False
        for label, ref in config["tables"][table].items():
            r = _load_eval(results, ref)
            if not r:
                continue
            longest = max(r["results"], key=lambda x: x["length"])
            y = pd.Series(longest["per_position"]).rolling(max(1, r["train_length"] // 4), min_periods=1).mean()
            ax.plot(np.arange(1, len(y) + 1), y, label=label, lw=1)
            ax.axvline(r["train_length"], color="grey", ls=":", lw=1)
            drawn = True
        _finish_panel(ax, drawn, title, "position in window", "mean loss (smoothed)")
    fig.suptitle("Per-position loss at the longest evaluated length (dotted: training length)", fontsize=10)
    _save(fig, out, "per_position")


def training_curves(config: dict, results: Path, out: Path) -> None:
    from .tables import Results

    res = Results(results)
    archs: dict[str, list[str]] = {}
    for m, entry in config["models"].items():
        archs.setdefault(entry["architecture"], []).append(m)
    fig, axes = plt.subplots(1, len(archs), figsize=(4.5 * len(archs), 3.6), squeeze=False)
    for ax, (arch, models) in zip(axes[0], archs.items()):
        for m in models:
            d = res.model_dir(m)
            p = d / "metrics.jsonl" if d else None
            if p is None or not p.exists():
                continue
            df = pd.DataFrame([json.loads(x) for x in p.read_text().splitlines() if x])
            ax.plot(df["tokens"], df["loss"].rolling(20, min_periods=1).mean(), label=m, lw=1)
        ax.set_title(f"architecture {arch}", fontsize=9)
        ax.set_xlabel("training tokens")
        ax.set_ylabel("training loss (smoothed)")
        ax.legend(fontsize=6)
    fig.suptitle("Training loss", fontsize=10)
    _save(fig, out, "training_curves")


def position_values(out: Path, seq_len: int = 512, d_model: int = 1024, extent: int = 4) -> dict[str, Any]:
    """ExPE and ExQPE position values over 4x the training length in fp32 and after a bf16 cast,
    at the paper's scale (L = 512, d = 1024, l = d/8); returns the distinct-position counts."""
    import torch

    from .encodings import ExPE, ExQPE

    T = extent * seq_len
    n = np.arange(T)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    counts = {}
    for ax, cls in zip(axes, (ExPE, ExQPE)):
        enc = cls(d_model, seq_len)
        v32 = enc.values(T, torch.device("cpu"))
        v16 = v32.to(torch.bfloat16)
        distinct = {k: len(torch.unique(v, dim=0)) for k, v in (("fp32", v32), ("bf16", v16.float()))}
        counts[cls.__name__] = distinct
        ax.plot(n, v32[:, 0].numpy(), label="dim 0, fp32", lw=1.5)
        ax.step(n, v16[:, 0].float().numpy(), label="dim 0, bf16", lw=1, where="post")
        if cls is ExQPE:
            ax.plot(n, v32.mean(1).numpy(), label="mean over l dims, fp32", lw=1, ls="--")
        ax.axvline(seq_len, color="grey", ls=":", lw=1)
        ax.set_title(f"{cls.__name__} (L={seq_len}, l={enc.l}): distinct positions of {T}: "
                     f"fp32 {distinct['fp32']}, bf16 {distinct['bf16']}", fontsize=8)
        ax.set_xlabel("position n")
        ax.set_ylabel("value")
        ax.legend(fontsize=7)
    fig.suptitle("Position values p_n along the sequence (dotted: training length)", fontsize=10)
    _save(fig, out, "position_values")
    return counts


def build_plots(config: dict, results_dir: str | Path, out_dir: str | Path) -> None:
    sns.set_theme(style="whitegrid", context="paper")
    results, out = Path(results_dir), ensure_dir(out_dir)
    loss_vs_length(config, results, out)
    per_position(config, results, out)
    training_curves(config, results, out)
    position_values(out)
