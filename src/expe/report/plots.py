"""Figures for the paper / reproduction report, as PNG and PDF, from the tidy data.

Lines are means over seeds with 95% Student-t bands; every line has its own marker and dash
pattern (ExPE and ExQPE often coincide and must both stay visible); legends use the table labels;
the paper's values are hollow reference markers of the same colour where the paper has them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from expe.config import parse_ref  # noqa: E402
from expe.io import atomic_path, ensure_dir  # noqa: E402
from expe.report import paper_numbers as P  # noqa: E402
from expe.report.catalog import panels, series_groups  # noqa: E402
from expe.report.results import Results  # noqa: E402
from expe.report.stats import half_width  # noqa: E402

MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "*", "h", "p"]
DASHES = ["-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1)), (0, (1, 1)), (0, (5, 2, 1, 2))]
COLORS = plt.get_cmap("tab10").colors


def save(fig, out: Path, name: str) -> None:
    for ext in ("png", "pdf"):
        with atomic_path(out / f"{name}.{ext}", what=f"plot {name}.{ext}", kept="results are kept; free space and rerun") as tmp:
            fig.savefig(tmp, format=ext, dpi=200, bbox_inches="tight")
    plt.close(fig)


def style(i: int) -> dict[str, Any]:
    return {"color": COLORS[i % len(COLORS)], "marker": MARKERS[i % len(MARKERS)], "ls": DASHES[i % len(DASHES)],
            "ms": 4, "lw": 1.3}


def band(ax, x, g: pd.DataFrame, style: dict, label: str, y="mean", lo="lo", hi="hi") -> None:
    ax.plot(x, g[y], label=label, **style)
    if g[hi].notna().any():
        ax.fill_between(x, g[lo], g[hi], color=style["color"], alpha=0.15, lw=0)


def seed_summary(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    df = df.assign(value=df["value"].astype(float))  # the probes' tidy column also holds "not run" reasons
    s = df.groupby(keys)["value"].agg(mean="mean", half=half_width, n="count").reset_index()
    s["lo"], s["hi"] = s["mean"] - s["half"], s["mean"] + s["half"]
    return s


def _empty(ax, title: str) -> None:
    ax.text(0.5, 0.5, "not run: no results", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(title, fontsize=8)


def legend(ax, **kw) -> None:
    """7 pt, on a translucent white box so lines beneath stay visible and the text readable."""
    kw.setdefault("framealpha", 0.75)
    ax.legend(fontsize=7, frameon=True, edgecolor="none", handlelength=2.4, borderpad=0.3, labelspacing=0.25, **kw)


def _finish(ax, title: str, xlabel: str, ylabel: str, log2: bool = True, loc: str = "best") -> None:
    if log2:
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=8)
    legend(ax, loc=loc)


def _grid(n_rows: int, n_cols: int, height: float = 2.1, width: float = 7.2):
    """A figure of n_rows x n_cols panels at a paper's double-column width, 7-8 pt text."""
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(width, height * n_rows), squeeze=False)
    return fig, axes


def _loss_series(df: pd.DataFrame, ref: str, ratio: bool) -> pd.DataFrame:
    """Mean over seeds with a 95% t band, of the loss at each ev or of its ratio to the model's ev=1 loss
    (per seed, then over seeds)."""
    m, v = parse_ref(ref)
    g = df[(df.model == m) & (df.variant == v)]
    if ratio and not g.empty:
        one = g[g.ev == 1].set_index("seed")["value"]
        g = g.assign(value=g["value"].values / one.reindex(g["seed"]).values).dropna(subset=["value"])
    return seed_summary(g, ["ev"]).sort_values("ev") if not g.empty else g


def _loss_panel(ax, df: pd.DataFrame, rows: dict, paper: dict, title: str, ratio: bool) -> bool:
    """Our loss (or its ratio to ev=1) against length; with ratio, the paper's ratios on the same axis
    as hollow markers (the paper's absolute losses are at another scale: only shapes compare)."""
    drawn = False
    for i, (label, ref) in enumerate(rows.items()):
        s = _loss_series(df, ref, ratio)
        if s.empty:
            continue
        st = style(i)
        band(ax, s["ev"], s, st, label)
        if ratio and label in paper and 1 in paper[label]:
            pk = sorted(k for k in paper[label] if isinstance(k, int))
            ax.plot(pk, [paper[label][k] / paper[label][1] for k in pk], ls=":", lw=0.8, marker=st["marker"],
                    mfc="none", mec=st["color"], color=st["color"], ms=5, mew=0.9)
        drawn = True
    if not drawn:
        _empty(ax, title)
        return False
    ax.axvline(1, color="grey", ls=":", lw=0.8)
    if ratio:
        ax.axhline(1, color="grey", lw=0.6)
    _finish(ax, title, "evaluation length / L (ev)", "loss / loss at ev=1" if ratio else "loss (nats)")
    return True


def loss_vs_length(config: dict, res: Results, out: Path) -> None:
    """Overview (every table, our absolute losses, one row per table) and one single-column figure per
    paper table: our loss relative to ev=1 beside the paper's, on one axis, at most 5 lines per panel."""
    df = res.df[res.df.metric == "loss"]
    pans = panels(config)
    groups = [(key, title, series_groups(rows), paper) for key, title, rows, paper in pans]
    ncol = max((len(g) for _, _, g, _ in groups), default=1)
    fig, axes = _grid(len(groups), ncol)
    for r, (_, title, gs, paper) in enumerate(groups):
        for c in range(ncol):
            if c < len(gs):
                short = title.split(" (")[0]  # the legend names the rows
                _loss_panel(axes[r, c], df, gs[c], paper, short if len(gs) == 1 else f"{short} ({c + 1}/{len(gs)})",
                            ratio=False)
            else:
                axes[r, c].axis("off")
    fig.suptitle("Our loss against evaluation length: mean over seeds, 95% t bands", fontsize=9)
    fig.tight_layout()
    save(fig, out, "loss_vs_length")
    for key, title, gs, paper in groups:
        fig, axes = plt.subplots(len(gs), 1, figsize=(3.5, 2.3 * len(gs)), squeeze=False, sharex=True)
        for i, g in enumerate(gs):
            _loss_panel(axes[i, 0], df, g, paper, title if len(gs) == 1 else f"{title} ({i + 1}/{len(gs)})", ratio=True)
        fig.text(0.5, -0.01, "lines: ours (95% seed bands); hollow markers, dotted: the paper's", ha="center",
                 fontsize=7)
        fig.tight_layout()
        save(fig, out, f"loss_vs_length_{key}")


def per_position(config: dict, res: Results, out: Path) -> None:
    pp = pd.DataFrame(res.per_position)
    groups = [(title, series_groups(rows)) for _, title, rows, _ in panels(config)]
    ncol = max((len(g) for _, g in groups), default=1)
    fig, axes = _grid(len(groups), ncol)
    for r, (title, gs) in enumerate(groups):
        for c in range(ncol):
            ax = axes[r, c]
            if c >= len(gs):
                ax.axis("off")
                continue
            drawn, ev = False, None
            for i, (label, ref) in enumerate(gs[c].items()):
                m, v = parse_ref(ref)
                g = pp[(pp.model == m) & (pp.variant == v)] if not pp.empty else pp
                if g.empty:
                    continue
                ev = max((e for e in g.ev.unique() if e <= 16), default=g.ev.max())
                g = g[g.ev == ev].rename(columns={"loss": "value"}).copy()
                L = int(g["train_length"].iloc[0])
                g["bin"] = g["position_start"] // max(1, L // 2)  # the tidy bins of L/8, drawn in bins of L/2
                g = g.groupby(["seed", "bin"], as_index=False)["value"].mean()
                s = seed_summary(g, ["bin"]).sort_values("bin")
                band(ax, (s["bin"] + 0.5) / 2, s, {**style(i), "marker": None}, label)
                drawn = True
            name = title if len(gs) == 1 else f"{title} ({c + 1}/{len(gs)})"
            if not drawn:
                _empty(ax, name)
                continue
            ax.axvline(1, color="grey", ls=":", lw=0.8)
            _finish(ax, f"{name}, ev={int(ev)}", "position in the window / L", "loss (nats), bins of L/2", log2=False)
    fig.suptitle("Per-position loss along a window of 16 L (dotted: the training length); 95% seed bands", fontsize=9)
    fig.tight_layout()
    save(fig, out, "per_position")


def context_use(config: dict, res: Results, out: Path) -> None:
    """Loss at ev = 1 by tokens of context in log-spaced bins (the context_use table), 95% seed bands:
    one single-column figure per paper table, a table of more than 5 rows split into stacked panels
    that share both axes."""
    from expe.report.tables import bin_label, context_bins

    for key, title, rows, _ in panels(config):
        groups = series_groups(rows)
        fig, axes = plt.subplots(len(groups), 1, figsize=(3.5, 0.4 + 2.1 * len(groups)), sharex=True, sharey=True,
                                 squeeze=False)
        ticks: dict[float, str] = {}
        index = {label: i for i, label in enumerate(rows)}  # one style per row across the stacked panels
        for ax, group in zip(axes[:, 0], groups):
            drawn = False
            for label, ref in group.items():
                i = index[label]
                by_seed = res.context_losses(*parse_ref(ref))
                if not by_seed:
                    continue
                bins = context_bins(len(next(iter(by_seed.values()))))
                g = pd.DataFrame([dict(seed=s, x=float(np.sqrt(lo * hi)), value=float(c[lo - 1 : hi].mean()))
                                  for s, c in by_seed.items() for lo, hi in bins])
                ticks.update({float(np.sqrt(lo * hi)): bin_label(lo, hi) for lo, hi in bins})
                s = seed_summary(g, ["x"]).sort_values("x")
                band(ax, s["x"], s, {**style(i), "ms": 3, "lw": 1.1}, label)
                drawn = True
            if not drawn:
                _empty(ax, title)
                continue
            ax.set_xscale("log", base=2)
            ax.set_ylabel("loss at ev = 1 (nats)", fontsize=7)
            ax.tick_params(labelsize=7)
            ax.legend(fontsize=7, frameon=False, handlelength=2.4, loc="best")
        ax = axes[-1, 0]
        if ticks:
            ax.set_xticks(list(ticks), list(ticks.values()), fontsize=7)
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("tokens of context (log-spaced bins)", fontsize=7)
        axes[0, 0].set_title(f"{title}: context use", fontsize=8)
        fig.tight_layout()
        save(fig, out, f"context_use_{key}")


def context(config: dict, res: Results, out: Path) -> None:
    """Top: sliding-window loss (the same tokens at every ev). Bottom: loss on positions >= L minus < L."""
    df = res.df
    gs = [(f"{title}" if len(g) == 1 else f"{title} ({i + 1}/{len(g)})", grp)
          for key, title, rows, _ in panels(config) if key in ("section41", "large")
          for g in [series_groups(rows)] for i, grp in enumerate(g)]
    fig, axes = _grid(2, max(1, len(gs)))
    for c, (title, rows) in enumerate(gs):
        for r, (metric, what) in enumerate((("sliding_loss", "sliding-window loss (nats)"),
                                            ("gap", "loss ≥L − loss <L (nats)"))):
            ax = axes[r, c]
            drawn = False
            for i, (label, ref) in enumerate(rows.items()):
                m, v = parse_ref(ref)
                sel = df[(df.model == m) & (df.variant == v)]
                if metric == "gap":
                    a = sel[sel.metric == "loss_beyond_L"].set_index(["seed", "ev"])["value"]
                    b = sel[sel.metric == "loss_within_L"].set_index(["seed", "ev"])["value"]
                    g = (a - b).dropna().rename("value").reset_index()
                else:
                    g = sel[sel.metric == metric]
                if g.empty:
                    continue
                s = seed_summary(g, ["ev"]).sort_values("ev")
                band(ax, s["ev"], s, style(i), label)
                drawn = True
            if not drawn:
                _empty(ax, title)
                continue
            if metric == "gap":
                ax.axhline(0, color="grey", lw=0.8)
            _finish(ax, title, "ev", what)
    fig.suptitle("Top: sliding windows score the same tokens at every ev (lower: the extra context is used).\n"
                 "Bottom: the loss beyond the training length minus the loss within it", fontsize=8)
    fig.tight_layout()
    save(fig, out, "context")


def training_curves(config: dict, res: Results, out: Path) -> None:
    """Training loss against training tokens, per architecture (at most 5 models a panel), mean over seeds
    with a 95% t band, smoothed over 25 logged steps."""
    from expe.config import labels as model_labels

    labels = model_labels(config)
    panels_: list[tuple[str, list[str]]] = []
    for arch in dict.fromkeys(e["architecture"] for e in config["models"].values()):
        models = [m for m, e in config["models"].items() if e["architecture"] == arch]
        n = -(-len(models) // 5)
        size = -(-len(models) // n)
        panels_ += [(f"architecture {arch}" + (f" ({i // size + 1}/{n})" if n > 1 else ""), models[i : i + size])
                    for i in range(0, len(models), size)]
    ncol = min(2, len(panels_))  # two columns: a third of the page is narrower than the longest labels
    fig, axes = _grid(-(-len(panels_) // ncol), ncol, height=2.3)
    for ax, (title, models) in zip(axes.flat, panels_):
        for i, m in enumerate(models):
            rows = []
            for seed, d in res.index["models"].get(m, {}).items():
                p = res.path(f"{d}/metrics.jsonl")
                if p.exists():
                    f = pd.DataFrame([json.loads(x) for x in p.read_text().splitlines() if x])
                    f["value"] = f["loss"].rolling(25, min_periods=1).mean()
                    rows.append(f.assign(seed=seed)[["seed", "tokens", "value"]])
            if not rows:
                continue
            s = seed_summary(pd.concat(rows), ["tokens"]).sort_values("tokens")
            band(ax, s["tokens"], s, {**style(i), "marker": None}, labels.get(m, m))
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(4))
        ax.xaxis.set_major_formatter(matplotlib.ticker.EngFormatter(sep=""))  # 400k, not 400000
        # upper right: the curves fall from the top left, and "best" put long labels over the axis
        _finish(ax, title, "training tokens", "training loss (nats)", log2=False, loc="upper right")
    for ax in list(axes.flat)[len(panels_):]:
        ax.axis("off")
    fig.suptitle("Training loss (smoothed over 25 steps), mean over seeds with 95% t bands", fontsize=9)
    fig.tight_layout()
    save(fig, out, "training_curves")


def position_values(out: Path, seq_len: int = 512, d_model: int = 1024, extent: int = 16,
                    run_seq_len: int | None = None) -> dict[str, Any]:
    """Where bf16 merges ExPE's positions: (a) a zoom on positions around 4L, values in fp32 and after
    a bf16 cast; (b) distinct bf16 values per bucket of L/8 positions up to 16L, at the paper's scale
    (L = 512, l = d/8) and at the run's own L. Returns the distinct-position counts over 4L."""
    import torch

    from expe.nn.encodings import ExPE, ExQPE

    fig, axes = plt.subplots(1, 3, figsize=(7.2, 2.6))
    counts: dict[str, Any] = {}
    n0 = 4 * seq_len - 24
    zoom = np.arange(n0, n0 + 48)
    for i, cls in enumerate((ExPE, ExQPE)):
        enc = cls(d_model, seq_len)
        v = enc.values(extent * seq_len, torch.device("cpu"))
        b = v.to(torch.bfloat16).float()
        counts[cls.__name__] = {"fp32": len(torch.unique(v[: 4 * seq_len], dim=0)),
                                "bf16": len(torch.unique(b[: 4 * seq_len], dim=0))}
        if cls is ExPE:
            axes[0].plot(zoom, v[zoom, 0].numpy(), color=COLORS[0], lw=1.2, label="ExPE, fp32")
            axes[0].step(zoom, b[zoom, 0].numpy(), color=COLORS[0], ls="--", where="post", lw=1.2, label="ExPE, bf16")
        else:
            axes[0].plot(zoom, v[zoom].mean(1).numpy(), color=COLORS[1], lw=1.2, label="ExQPE mean of l dims, fp32")
            axes[0].step(zoom, b[zoom].mean(1).numpy(), color=COLORS[1], ls=":", where="post", lw=1.6,
                         label="ExQPE mean of l dims, bf16")
    axes[0].set_title(f"positions near 4L (L = {seq_len}, d = {d_model})", fontsize=8)
    axes[0].set_xlabel("position n")
    axes[0].set_ylabel("value written into the first l dims")
    legend(axes[0], loc="upper left")
    for ax, L in ((axes[1], seq_len), (axes[2], run_seq_len or 64)):
        bucket = max(1, L // 8)
        for i, cls in enumerate((ExPE, ExQPE)):
            enc = cls(d_model if L == seq_len else 64, L)
            b = enc.values(extent * L, torch.device("cpu")).to(torch.bfloat16).float()
            xs, ys = [], []
            for s in range(0, extent * L, bucket):
                xs.append((s + bucket / 2) / L)
                ys.append(len(torch.unique(b[s : s + bucket], dim=0)))
            ax.plot(xs, ys, label=f"{cls.__name__} in bf16", **{**style(i), "marker": None})
        ax.axhline(bucket, color="grey", ls=":", lw=0.8, label=f"all {bucket} positions distinct")
        ax.set_xscale("log", base=2)
        ax.set_ylim(0, bucket * 1.15)
        ax.set_xlabel("position / L")
        ax.set_ylabel(f"distinct values per {bucket} positions")
        ax.set_title(f"L = {L}" + (" (the paper's)" if L == seq_len else " (this run)"), fontsize=8)
        legend(ax, loc="lower left")
    fig.suptitle("ExPE's p_n = S + θn merges neighbouring positions once cast to bf16; ExQPE's round-robin "
                 "counter keeps them apart", fontsize=8)
    fig.tight_layout()
    save(fig, out, "position_values")
    return counts


def build_plots(config: dict, index_path: str | Path, out_dir: str | Path) -> None:
    res = Results(index_path)
    out = ensure_dir(out_dir)
    plt.rcParams.update({"font.size": 7, "axes.titlesize": 8, "axes.labelsize": 7, "xtick.labelsize": 7,
                         "ytick.labelsize": 7, "legend.fontsize": 7, "axes.grid": True, "grid.alpha": 0.3,
                         "axes.spines.top": False, "axes.spines.right": False})
    loss_vs_length(config, res, out)
    per_position(config, res, out)
    context(config, res, out)
    context_use(config, res, out)
    training_curves(config, res, out)
    L = next(iter(c["train"]["seq_len"] for c in res.model_configs.values()), 64)
    position_values(out, run_seq_len=L)
