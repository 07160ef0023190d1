"""Tables, plots and the summary of the recall study (paper_tables/recall/): can each encoding copy a
span (or recall a key's value) inside the training length L, with the repeat at positions beyond L,
and across distances beyond L? Plus language models trained with copy-augmented windows.

Statistics. Seeds are the primary unit: a seed's accuracy in a cell is its exact next-token matches over
the cell's scored tokens, and a table cell is the mean over seeds ± the half-width of a 95% Student-t
interval over those seed means. The tidy cell file adds a 95% Wilson interval over the sequences of all
seeds pooled (each sequence's accuracy, in [0, 1], counts as one trial: a variable in [0, 1] with mean p
has variance at most p(1 - p), so the interval is conservative where a sequence's tokens are correlated).

Positive control. A seed has learned the task when its accuracy on held-out sequences of its training
distribution reaches recall.threshold. Far cells are means over the seeds that learned; an encoding none
of whose seeds learned reads "not learned in training (x% inside L)" there, never a number that would
read as a failure to extrapolate.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from expe import config as C
from expe.io import ensure_dir, read_json, write_text
from expe.report import stats
from expe.report.render import Est, Table
from expe.report.results import Results

KINDS = ("far position", "far distance")
SHORT = {"far position": "far pos.", "far distance": "far dist."}


# --------------------------------------------------------------------------- the positive control

def learned_seeds(files: dict[str, dict[str, str]], threshold: float) -> dict[str, Any]:
    """Which seeds learned the task: label -> {seed: result file} read, the in-distribution accuracy of each
    and the seeds below `threshold` (those get a longer run). Written by the workflow's `recall_learned`."""
    out: dict[str, Any] = {"threshold": threshold, "labels": {}}
    for label, by_seed in files.items():
        acc = {seed: read_json(f)["in_distribution"]["accuracy"] for seed, f in by_seed.items()}
        out["labels"][label] = {"accuracy": acc, "below": [int(s) for s, a in acc.items() if a < threshold]}
    return out


def not_learned(inside: float) -> str:
    return f"not learned in training ({100 * inside:.0f}% inside L)"


def seed_accuracy(df: pd.DataFrame) -> pd.Series:
    """Accuracy per seed, pooled over the rows (cells) of each seed: scored tokens right / scored."""
    g = df.groupby("seed")[["correct", "total"]].sum()
    return g["correct"] / g["total"]


def control(df: pd.DataFrame, threshold: float) -> tuple[pd.Series, list[int]]:
    """(in-distribution accuracy per seed, the seeds at or above the threshold) of one model's rows."""
    inside = seed_accuracy(df[df.kind == "in distribution"])
    return inside, sorted(int(s) for s, a in inside.items() if a >= threshold)


def far_cell(df: pd.DataFrame, threshold: float, kind: str, ev: int, distance: int | None = None) -> Est | str:
    """One far cell of one model (all its seeds' rows): the mean over the seeds that learned the task, or
    why there is no number."""
    inside, ok = control(df, threshold)
    if inside.empty:
        return "not run (no result)"
    if not ok:
        return not_learned(float(inside.mean()))
    sel = df[(df.kind == kind) & (df.ev == ev) & df.seed.isin(ok)]
    if distance is not None:
        sel = sel[sel.distance == distance]
    if sel.empty:
        return "—" if not df[(df.kind == kind) & (df.ev == ev)].empty or distance is not None else "not in the grid"
    iv = stats.t_interval(seed_accuracy(sel).tolist())
    return Est(iv.mean, iv.half, iv.n)


def _inside(df: pd.DataFrame) -> Est | str:
    iv = stats.t_interval(seed_accuracy(df[df.kind == "in distribution"]).tolist())
    return Est(iv.mean, iv.half, iv.n) if iv.n else "not run (no result)"


# --------------------------------------------------------------------------- tables

def task_table(rec: pd.DataFrame, task: str, labels: list[str], config: dict, caption: str) -> Table:
    """Rows: encodings (and their longer runs); columns: the control, then far position and far distance
    per window (grid cells of a kind and window pooled per seed)."""
    r = config["recall"]
    thr, evs = r["threshold"], [k for k in r["multiples"] if k > 1]
    d = rec[rec.task == task]
    kind_desc = config["recall"]["tasks"][task]
    t = Table(task, f"Recall task `{task}` ({kind_desc['kind']}): next-token accuracy on the scored tokens, "
              "inside L and beyond it", caption,
              ["Encoding", "steps", "in distribution (inside L)", "seeds learned"]
              + [f"{SHORT[k]} {e}L" for k in KINDS for e in evs])
    for label in labels:
        for run in ("first", "longer"):
            g = d[(d.label == label) & (d.run == run)]
            if g.empty:
                if run == "first":
                    t.add([label, "", "not run (no result)", ""] + ["not run (no result)"] * (len(t.columns) - 4),
                          model=label, variant=run, source="")
                continue
            inside, ok = control(g, thr)
            name = label if run == "first" else f"{label}, {int(g.steps.iloc[0])}-step run"
            cells = [name, int(g.steps.iloc[0]), _inside(g), f"{len(ok)}/{len(inside)}"]
            cells += [far_cell(g, thr, k, e) for k in KINDS for e in evs]
            t.add(cells, model=str(g.model.iloc[0]), variant=run, source=";".join(sorted(set(g.source))))
    chance = d.chance.iloc[0] if not d.empty else float("nan")
    t.digits = 2
    t.notes += [
        f"Accuracy: exact next-token (argmax) matches on the scored tokens (copy: the 2nd..last token of the repeated "
        f"span; MQAR: the value after a queried key); chance {chance:.3f} (a uniform guess among the possible tokens).",
        "Mean over seeds ± the half-width of a 95% Student-t interval over seed means ('(1 seed)': no interval); "
        "a 95% Wilson interval over the sequences of all seeds is in data/recall_cells.csv.",
        f"In distribution: held-out sequences drawn like the training ones (distances and placements over the whole "
        f"window of L = {r['train']['seq_len']}); a seed 'learned' the task when it reaches {thr:.0%} there. Far "
        f"cells average only the seeds that learned; with none: 'not learned in training (x% inside L)', which says "
        "nothing about extrapolation.",
        "far pos. kL: the distance D inside the trained range (the grid's three, pooled), every token of both copies "
        "(or the key-value block and query) at positions >= L, at the end of a window of kL tokens. far dist. kL: D "
        "> L (kL/2 and kL - span, pooled; at 2L only 2L - span), the first copy at the window's start.",
        f"'<n>-step run' rows: the first {r['longer']['max_seeds'] or 'every'} seed(s) below the threshold trained "
        f"again from scratch with {r['longer']['factor']} x the steps (the schedule stretched with them), chosen "
        "automatically after the first runs (the workflow's recall_learned step); learned then = slowness, still not "
        "= inability at this size and budget.",
    ]
    return t


def _steps_to(metrics: Path, threshold: float, window: int = 5) -> int | None:
    """The first logged step at which the training-batch accuracy, averaged over `window` log points, reaches
    the threshold (None: never)."""
    if not metrics.exists():
        return None
    rows = [json.loads(x) for x in metrics.read_text().splitlines() if x]
    acc = pd.Series([r.get("accuracy", np.nan) for r in rows]).rolling(window, min_periods=window).mean()
    hit = np.flatnonzero(acc.to_numpy() >= threshold)
    return int(rows[hit[0]]["step"]) + 1 if len(hit) else None


def training_table(res: Results, config: dict, caption: str) -> Table:
    r = config["recall"]
    thr = r["threshold"]
    rec = res.recall
    t = Table("training", "Recall task models: training and the positive control, per seed", caption,
              ["Task", "Encoding", "steps", "final train loss", "in distribution per seed", "step reaching threshold",
               "longer run: in distribution"])
    for task in r["tasks"]:
        learned = res.learned.get(task, {}).get("labels", {})
        for label in r["encodings"]:
            g = rec[(rec.task == task) & (rec.label == label)]
            first = g[g.run == "first"]
            if first.empty:
                t.add([task, label, "", "not run (no result)", "", "", ""], model=label, variant=task, source="")
                continue
            inside, _ = control(first, thr)
            seeds = sorted(inside.index)
            model = str(first.model.iloc[0])
            cfgs = [res.model_configs.get((model, str(s))) for s in seeds]
            losses = [c["final_train_loss"] for c in cfgs if c]
            steps = [_steps_to(res.path(f"{res.index['models'][model][str(s)]}/metrics.jsonl"), thr) for s in seeds]
            longer = g[(g.run == "longer") & (g.kind == "in distribution")]
            if not r["longer"]["enabled"]:
                why = "disabled (recall.longer.enabled: false)"
            elif label in learned and not learned[label]["below"]:
                why = "not needed (every seed learned)"
            elif longer.empty:
                why = "not run (no result)"
            else:
                la = seed_accuracy(longer)
                why = ", ".join(f"seed {s}: {a:.2f}" for s, a in la.items()) + f" ({int(longer.steps.iloc[0])} steps)"
            t.add([task, label, int(first.steps.iloc[0]),
                   " / ".join(f"{x:.3f}" for x in losses) or "not run (no result)",
                   " / ".join(f"{inside[s]:.2f}" for s in seeds),
                   " / ".join("—" if x is None else str(x) for x in steps), why],
                  model=model, variant=task, source=";".join(sorted(set(first.source))))
    t.notes += [f"Per seed, in seed order ({', '.join(map(str, r['seeds']))}). Step reaching threshold: the first "
                f"logged step at which the training-batch accuracy (fresh sequences every step, measured before the "
                f"update), averaged over 5 log points, reaches {thr:.0%}; '—': never.",
                f"Longer run: the first {r['longer']['max_seeds'] or 'every'} seed(s) below the threshold, trained "
                f"from scratch with {r['longer']['factor']} x the steps."]
    return t


def augmented_loss_table(res: Results, config: dict, caption: str) -> Table:
    lab = C.labels(config)
    evs = config["recall"]["multiples"]
    df = res.df[res.df.metric == "loss"]
    t = Table("augmented_loss", "Copy-augmented language models: held-out loss at ev = 1-16 beside the plain ones",
              caption, ["Model"] + [f"Loss ev={k}" for k in evs])
    for m in C.augmented_models(config):
        for who in (m, m + C.AUG_SUFFIX):
            cells: list[Any] = [lab.get(who, who)]
            for k in evs:
                v = df[(df.model == who) & (df.ev == k)]["value"]
                iv = stats.t_interval(v.tolist())
                cells.append(Est(iv.mean, iv.half, iv.n) if iv.n else "not run (no result)")
            t.add(cells, model=who, variant="base", source=res.source_of(who, "base"))
    a = config["recall"]["augmented"]
    t.notes += ["Mean over seeds ± 95% t half-width. Non-overlapping windows of held-out documents (the paper's "
                "loss), as in the paper tables; the plain rows are the paper tables' models.",
                f"Copy-augmented: {a['fraction']:.0%} of the windows of every training batch repeat a span of "
                f"{a['segment']} tokens of themselves at a distance uniform on [{a['segment']}, L - {a['segment']}] "
                "(the text there overwritten); same data, steps and seeds otherwise."]
    return t


def augmented_retrieval_table(res: Results, config: dict, caption: str) -> Table:
    lab = C.labels(config)
    d = res.probes[(res.probes.probe == "retrieval") & (res.probes.metric == "gain_vs_control")]
    xs = sorted(d.x.unique()) if not d.empty else []
    t = Table("augmented_retrieval", "Repeat-retrieval probe on the copy-augmented and plain language models: "
              "loss drop on a repeated span against a control (nats/token)", caption,
              ["Model"] + [f"D={x:g}L" for x in xs])
    for m in C.augmented_models(config):
        for who in (m, m + C.AUG_SUFFIX):
            cells: list[Any] = [lab.get(who, who)]
            for x in xs:
                iv = stats.t_interval(d[(d.model == who) & (d.x == x)]["value"].tolist())
                cells.append(Est(iv.mean, iv.half, iv.n) if iv.n else "not run (no result)")
            t.add(cells, model=who, variant="base", source=";".join(sorted(set(d[d.model == who].source))))
    t.notes += ["The beyond-the-paper repeat-retrieval probe (beyond.retrieval settings; see beyond/retrieval.md): "
                "a held-out span repeated D tokens after its first copy, the loss on the repeat against a control "
                "window without the first copy. Mean over seeds ± 95% t half-width; 0: no retrieval."]
    return t


def cells_frame(rec: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """data/recall_cells.csv: every grid cell of every model, over its seeds and over the learned seeds."""
    rows = []
    for (task, label, run, kind, window, distance), g in rec.groupby(
            ["task", "label", "run", "kind", "window", "distance"], dropna=False, sort=False):
        model_rows = rec[(rec.task == task) & (rec.label == label) & (rec.run == run)]
        _, ok = control(model_rows, threshold)
        acc = seed_accuracy(g)
        iv = stats.t_interval(acc.tolist())
        ivl = stats.t_interval(acc[acc.index.isin(ok)].tolist())
        seq = int(g.sequences.sum())
        p, lo, hi = stats.wilson((g.value * g.sequences).sum(), seq)  # mean of per-sequence accuracies (equal counts)
        rows.append(dict(task=task, label=label, run=run, kind=kind, ev=int(g.ev.iloc[0]), window=int(window),
                         distance=None if pd.isna(distance) else int(distance),
                         first_start=None if pd.isna(g.first_start.iloc[0]) else int(g.first_start.iloc[0]),
                         seeds=iv.n, mean=iv.mean, t_lo=iv.lo, t_hi=iv.hi, seeds_learned=ivl.n,
                         mean_learned=ivl.mean if ivl.n else None, t_lo_learned=ivl.lo, t_hi_learned=ivl.hi,
                         sequences=seq, wilson_p=p, wilson_lo=lo, wilson_hi=hi,
                         exact=int(g.exact.sum()), chance=float(g.chance.iloc[0]), steps=int(g.steps.iloc[0])))
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- plots

def _groups(labels: list[str], size: int = 5) -> list[list[str]]:
    """At most `size` encodings per panel: the baselines (no 'ExPE'/'ExQPE' in the label) and the ExPE family,
    each split further when longer."""
    base = [x for x in labels if "ExPE" not in x and "ExQPE" not in x]
    fam = [x for x in labels if x not in base]
    out = []
    for grp in (base, fam):
        out += [grp[i : i + size] for i in range(0, len(grp), size)]
    return [g for g in out if g]


def _plots(res: Results, config: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from expe.report.plots import COLORS, DASHES, MARKERS, band, save

    plt.rcParams.update({"font.size": 7, "axes.titlesize": 7, "axes.labelsize": 7, "xtick.labelsize": 7,
                         "ytick.labelsize": 7, "legend.fontsize": 7, "axes.grid": True, "grid.alpha": 0.3,
                         "axes.spines.top": False, "axes.spines.right": False})
    r = config["recall"]
    thr, labels = r["threshold"], list(r["encodings"])
    groups = _groups(labels)
    sty = {lab: {"color": COLORS[i % 5], "marker": MARKERS[i % 5], "ls": DASHES[i % 5], "ms": 3.5, "lw": 1.1}
           for grp in groups for i, lab in enumerate(grp)}
    rec = res.recall[res.recall.run == "first"]
    for task in r["tasks"]:
        d = rec[rec.task == task]
        chance = float(d.chance.iloc[0]) if not d.empty else None
        # accuracy against window length: one block per group of encodings (far position | far distance, legend)
        blocks = []
        for grp in groups:
            learned_, missing = [], []
            for lab in grp:
                inside, ok = control(d[d.label == lab], thr)
                if not inside.empty:
                    (learned_ if ok else missing).append((lab, inside, ok))
            note = "; ".join(f"{lab} ({100 * inside.mean():.0f}%)" for lab, inside, _ in missing)
            note = textwrap.fill("not learned inside L: " + note, 62) if missing else ""
            blocks.append((learned_, note, 1.9 + 0.13 * -(-len(learned_) // 2) + 0.12 * (note.count("\n") + bool(note))))
        fig = plt.figure(figsize=(3.5, sum(h for *_, h in blocks)))
        subs = fig.subfigures(len(blocks), 1, height_ratios=[h for *_, h in blocks]) if len(blocks) > 1 else [fig]
        for sub, grp, (learned_, note, h) in zip(subs, groups, blocks):
            axes = sub.subplots(1, 2, sharey=True)
            for lab, inside, ok in learned_:
                g = d[d.label == lab]
                for ax, kind in zip(axes, KINDS):
                    pts = [(1, inside[inside.index.isin(ok)].tolist())]
                    for e in sorted(g[g.kind == kind].ev.unique()):
                        pts.append((e, seed_accuracy(g[(g.kind == kind) & (g.ev == e) & g.seed.isin(ok)]).tolist()))
                    s = pd.DataFrame([dict(x=x, mean=np.mean(v), half=stats.half_width(v)) for x, v in pts])
                    s["lo"], s["hi"] = s["mean"] - s["half"], s["mean"] + s["half"]
                    band(ax, s["x"], s, sty[lab], f"{lab} ({len(ok)}/{len(inside)} seeds)")
            for ax, kind in zip(axes, KINDS):
                if chance is not None:
                    ax.axhline(chance, color="grey", ls=":", lw=0.8)
                ax.set_xscale("log", base=2)
                ax.set_xticks(r["multiples"], [str(k) for k in r["multiples"]])
                ax.minorticks_off()
                ax.set_ylim(-0.03, 1.03)
                ax.set_title(f"{task}: {kind}")
                ax.set_xlabel("window / L (1: in distribution)")
            axes[0].set_ylabel("accuracy")
            if learned_:
                sub.legend(*axes[0].get_legend_handles_labels(), loc="upper center", bbox_to_anchor=(0.5, (h - 0.22 - 1.2 - 0.43) / h),
                           ncol=2, frameon=False, handlelength=2.2, columnspacing=1.0, fontsize=6.5)
            if note:
                sub.text(0.5, 0.02 / h, note, ha="center", va="bottom", fontsize=6.5, color="0.3")
            sub.subplots_adjust(left=0.14, right=0.98, top=1 - 0.22 / h, bottom=(h - 0.22 - 1.2) / h, wspace=0.08)
        save(fig, out, f"{task}_vs_length")
        _heatmaps(plt, save, d, task, r, out)
        for run in ("first", "longer"):
            _training(plt, save, res, task, groups, sty, out, thr, run)


def _heatmaps(plt, save, d: pd.DataFrame, task: str, r: dict, out: Path) -> None:
    """Per encoding: rows = window / L, columns = the grid's distances (the three inside the trained range at
    the window's end, then W/2 and W - span from its start); mean accuracy over the learned seeds."""
    from expe.config import slug

    thr = r["threshold"]
    for label in r["encodings"]:
        g = d[d.label == label]
        fig, ax = plt.subplots(figsize=(3.5, 2.3))
        inside, ok = control(g, thr)
        evs = sorted(g[g.kind != "in distribution"].ev.unique()) if not g.empty else []
        if inside.empty or not ok or not evs:
            why = "not run: no results" if inside.empty or not evs else not_learned(float(inside.mean()))
            ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            ax.set_title(f"{task}: {label}")
            save(fig, out, f"{task}_heatmap_{slug(label)}")
            continue
        near = sorted(g[g.kind == "inside L"].distance.unique())
        cols = [f"D={int(x)}" for x in near] + ["D=W/2", "D=W−span"]
        m = np.full((len(evs), len(cols)), np.nan)
        kinds = np.full(m.shape, "", dtype=object)
        for i, e in enumerate(evs):
            W = g[g.ev == e].window.iloc[0]
            gl = g[(g.ev == e) & g.seed.isin(ok)]
            for j, x in enumerate(near):
                kind = "inside L" if e == 1 else "far position"
                c = gl[(gl.kind == kind) & (gl.distance == x)]
                if not c.empty:
                    m[i, j], kinds[i, j] = seed_accuracy(c).mean(), kind
            far = sorted(gl[gl.kind == "far distance"].distance.unique())
            for x in far:
                j = len(near) + (0 if x < W * 3 // 4 else 1)
                m[i, j], kinds[i, j] = seed_accuracy(gl[(gl.kind == "far distance") & (gl.distance == x)]).mean(), "far distance"
        cmap = plt.get_cmap("viridis").copy()
        cmap.set_bad("0.88")  # not a cell of the grid (D = W/2 = L at 2L; D > L at W = L)
        im = ax.imshow(np.ma.masked_invalid(m), vmin=0, vmax=1, cmap=cmap, aspect="auto")
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                txt = "—" if np.isnan(m[i, j]) else f"{m[i, j]:.2f}"
                ax.text(j, i, txt, ha="center", va="center", fontsize=7,
                        color="black" if np.isnan(m[i, j]) or m[i, j] >= 0.6 else "white")
        ax.set_xticks(range(len(cols)), cols)
        ax.set_yticks(range(len(evs)), [f"{e}L" for e in evs])
        ax.axvline(len(near) - 0.5, color="white", lw=1.5)
        ax.set_xlabel("D: trained range, at the window's end | D > L")
        ax.set_ylabel("window W")
        ax.grid(False)
        ax.set_title(f"{task}, {label}: accuracy (mean of {len(ok)}/{len(inside)} seeds that learned;\n"
                     f"in distribution {inside[inside.index.isin(ok)].mean():.2f}, chance {g.chance.iloc[0]:.3f})")
        fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02)
        fig.tight_layout()
        save(fig, out, f"{task}_heatmap_{slug(label)}")


def _training(plt, save, res: Results, task: str, groups, sty, out: Path, thr: float, run: str) -> None:
    """Training loss and training-batch accuracy over steps, one thin line per seed (run: first or longer)."""
    rec = res.recall[(res.recall.task == task) & (res.recall.run == run)]
    name = f"{task}_training" + ("" if run == "first" else "_longer")
    h = 2.15
    fig = plt.figure(figsize=(3.5, h * len(groups)))
    subs = fig.subfigures(len(groups), 1) if len(groups) > 1 else [fig]
    drawn = False
    for sub, grp in zip(subs, groups):
        axes = sub.subplots(1, 2, sharex=True)
        for lab in grp:
            g = rec[rec.label == lab]
            if g.empty:
                continue
            model, seeds = str(g.model.iloc[0]), sorted(g.seed.unique())
            for k, seed in enumerate(seeds):
                p = res.path(f"{res.index['models'][model][str(seed)]}/metrics.jsonl")
                if not p.exists():
                    continue
                f = pd.DataFrame([json.loads(x) for x in p.read_text().splitlines() if x])
                smooth = f.set_index("step")[["loss", "accuracy"]].rolling(5, min_periods=1).mean()
                st = {"color": sty[lab]["color"], "ls": sty[lab]["ls"], "lw": 0.8}
                axes[0].plot(smooth.index + 1, smooth["loss"], label=lab if k == 0 else None, **st)
                axes[1].plot(smooth.index + 1, smooth["accuracy"], **st)
                drawn = True
        axes[1].axhline(thr, color="grey", ls=":", lw=0.8)
        axes[0].set_ylabel("training loss")
        axes[1].set_ylabel("accuracy (training batch)")
        axes[1].set_ylim(-0.03, 1.03)
        for ax in axes:
            ax.set_xlabel("step")
            ax.xaxis.set_major_formatter(plt.matplotlib.ticker.EngFormatter(sep=""))
        handles = axes[0].get_legend_handles_labels()
        if handles[0]:
            sub.legend(*handles, loc="lower center", ncol=3, frameon=False, handlelength=2.2, columnspacing=0.8,
                       fontsize=6.5)
        sub.subplots_adjust(left=0.13, right=0.98, top=0.9, bottom=0.42, wspace=0.45)
        axes[0].set_title(f"{task}: loss" + ("" if run == "first" else " (longer runs)"))
        axes[1].set_title(f"{task}: accuracy (dotted: threshold)")
    if not drawn:
        fig.clear()
        fig.set_size_inches(3.5, 0.8)
        fig.text(0.5, 0.5, f"{task}: no longer runs (every seed learned, or recall.longer disabled)", ha="center",
                 va="center")
    save(fig, out, name)


def _lm_plots(res: Results, config: dict, out: Path) -> None:
    import matplotlib.pyplot as plt

    from expe.report.catalog import chunks
    from expe.report.plots import band, save, seed_summary, style

    lab = C.labels(config)
    models = C.augmented_models(config)
    groups = chunks({m: i for i, m in enumerate(models)})  # <= 5 lines per panel; a model keeps its colour
    evs = config["recall"]["multiples"]
    loss = res.df[(res.df.metric == "loss") & res.df.ev.isin(evs)]
    ret = res.probes[(res.probes.probe == "retrieval") & (res.probes.metric == "gain_vs_control")]
    for name, df, x, xlabel, ylabel in (("augmented_loss", loss, "ev", "window / L (ev)", "held-out loss (nats)"),
                                        ("augmented_retrieval", ret, "x", "distance D / L", "retrieval gain (nats/token)")):
        fig, axes = plt.subplots(2, len(groups), figsize=(3.5 * len(groups), 3.9), sharex=True, sharey=True,
                                 squeeze=False)
        for row, suffix, title in zip(axes, ("", C.AUG_SUFFIX), ("plain", "copy-augmented")):
            for ax, group in zip(row, groups):
                for m, i in group.items():
                    g = df[df.model == m + suffix]
                    if g.empty:
                        continue
                    s = seed_summary(g, [x]).sort_values(x)
                    band(ax, s[x], s, {**style(i), "ms": 3.5, "lw": 1.1}, lab.get(m, m))
                if name == "augmented_retrieval":
                    ax.axhline(0, color="grey", lw=0.8)
                ax.axvline(1, color="grey", ls=":", lw=0.8)
                ax.set_xscale("log", base=2)
                xs = sorted(df[x].dropna().unique())
                ax.set_xticks(xs, [f"{v:g}" for v in xs])
                ax.minorticks_off()
                ax.set_title(f"{title} language models (95% seed bands)", fontsize=8)
                ax.legend(loc="best", frameon=False, handlelength=2.2, fontsize=6.5)
            row[0].set_ylabel(ylabel)
        for ax in axes[-1]:
            ax.set_xlabel(xlabel)
        fig.tight_layout()
        save(fig, out, name)


# --------------------------------------------------------------------------- summary and the folder

def summary(tables: dict[str, Table], config: dict, chance: dict[str, float]) -> str:
    """The README's recall section, generated from the tables (every number is one of theirs) and each
    task's chance level (from its result files)."""
    r = config["recall"]
    lines = []
    for task in r["tasks"]:
        t = tables[task]
        cols = t.columns
        pos = [i for i, c in enumerate(cols) if c.startswith(SHORT["far position"])]
        dist = [i for i, c in enumerate(cols) if c.startswith(SHORT["far distance"])]
        lines += [f"**{task}** (`recall/{task}.md`; chance {chance.get(task, float('nan')):.3f}): accuracy "
                  f"in distribution (inside L; mean ± 95% t over all seeds) | at far positions "
                  f"({', '.join(cols[i].split(' ')[-1] for i in pos)}) | at far distances "
                  f"({', '.join(cols[i].split(' ')[-1] for i in dist)}); the far cells: mean ± 95% t over the seeds "
                  "that learned:", ""]
        for row in t.rows:
            far = [row[i] for i in pos + dist]
            if all(isinstance(c, str) and c.startswith("not learned") for c in far):
                lines.append(f"- {row[0]}: {far[0]} ({row[3]} seeds learned)")
                continue
            lines.append(f"- {row[0]}: {t.text(row[2])} ({row[3]} seeds learned) | "
                         + " / ".join(t.text(row[i]) for i in pos) + " | " + " / ".join(t.text(row[i]) for i in dist))
        lines.append("")
    a = tables.get("augmented_loss")
    if a is not None and a.rows:
        lines += [f"Copy-augmented language models, held-out loss at {', '.join(c.removeprefix('Loss ') for c in a.columns[1:])} "
                  "(`recall/augmented_loss.md`):", ""]
        lines += [f"- {row[0]}: " + " / ".join(a.text(c) for c in row[1:]) for row in a.rows]
        lines.append("")
    p = tables.get("augmented_retrieval")
    if p is not None and p.rows and len(p.columns) > 1:
        lines += [f"Repeat-retrieval gain (nats/token) at {', '.join(p.columns[1:])} (`recall/augmented_retrieval.md`):", ""]
        lines += [f"- {row[0]}: " + " / ".join(p.text(c) for c in row[1:]) for row in p.rows]
        lines.append("")
    return "\n".join(lines) + "\n"


def build_recall(config: dict, index_path: str | Path, out_dir: str | Path) -> list[Table]:
    from expe.report.provenance import config_hash

    out = ensure_dir(out_dir)
    plots = ensure_dir(out / "plots")
    ensure_dir(out / "data")
    res = Results(index_path)
    r = config["recall"]
    caption = (f"Run `{config['run_name']}`: {len(r['seeds'])} seeds per encoding, tasks trained at L = "
               f"{r['train']['seq_len']}, {r['trials']} sequences per grid cell and seed, "
               f"{r['in_distribution_trials']} in distribution")
    lm_seeds = sorted({len(C.seeds(config, m)) for m in C.augmented_models(config)})
    lm_caption = (f"Run `{config['run_name']}`, {'/'.join(map(str, lm_seeds))} seed(s) per model, held-out "
                  f"{config['eval']['split']} documents")
    labels = list(r["encodings"])
    tables = [task_table(res.recall, task, labels, config, caption) for task in r["tasks"]]
    tables += [training_table(res, config, caption), augmented_loss_table(res, config, lm_caption),
               augmented_retrieval_table(res, config, lm_caption)]
    note = f"Config sha256 {config_hash(config)[:12]}; tidy data in data/ (source files with their sha256)."
    for t in tables:
        t.notes.append(note)
        t.write(out)
    kept = "result files are kept; free space and rerun"
    write_text(out / "data" / "recall.csv", res.recall.to_csv(index=False), what="tidy data recall.csv", kept=kept)
    write_text(out / "data" / "recall_cells.csv", cells_frame(res.recall, r["threshold"]).to_csv(index=False),
               what="tidy data recall_cells.csv", kept=kept)
    lms = [x for m in C.augmented_models(config) for x in (m, m + C.AUG_SUFFIX)]
    lm = pd.concat([res.df[res.df.model.isin(lms)].assign(kind="eval"),
                    res.probes[res.probes.model.isin(lms)].assign(kind="probe")], ignore_index=True)
    write_text(out / "data" / "augmented.csv", lm.to_csv(index=False), what="tidy data augmented.csv", kept=kept)
    _plots(res, config, plots)
    _lm_plots(res, config, plots)
    by = {t.name: t for t in tables}
    chance = res.recall.groupby("task")["chance"].first().to_dict()
    text = summary(by, config, chance)
    write_text(out / "summary.md", text)
    lines = ["# Recall: does each encoding retrieve from far context, or only keep a flat loss?", "",
             "Produced by `snakemake recall` (also part of `beyond_paper`). Every number comes from data/recall.csv "
             "and data/augmented.csv (with the result file and its sha256).", "", "## Summary", "", text, ""]
    for t in tables:
        lines += [t.markdown(), f"Files: [{t.name}.md]({t.name}.md), [{t.name}.tex]({t.name}.tex), "
                  f"[{t.name}.csv]({t.name}.csv)", ""]
    lines += ["## Plots", ""]
    from expe.report import catalog

    for p in catalog.recall_plots(config):
        lines += [f"### {p}", "", f"![{p}](plots/{p}.png)", "", f"[PDF](plots/{p}.pdf)", ""]
    write_text(out / "README.md", "\n".join(lines))
    return tables
