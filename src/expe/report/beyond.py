"""Tables and plots of the `beyond_paper` target: the repeat-retrieval and passkey probes, and the
precision study (evaluation in fp32 / bf16 / fp16; ExPE and ExQPE also trained in bf16; how many
positions each encoding keeps apart in each precision). Intervals over seeds as in the paper tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from expe import config as C  # noqa: E402
from expe.io import ensure_dir, write_text  # noqa: E402
from expe.report import stats  # noqa: E402
from expe.report.catalog import chunks  # noqa: E402
from expe.report.plots import band, legend, save, seed_summary, style  # noqa: E402
from expe.report.provenance import config_hash  # noqa: E402
from expe.report.render import Est, Table  # noqa: E402
from expe.report.results import Results  # noqa: E402
from expe.report.tables import INTERVAL_NOTE  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PRECISION_NOTE = ("CPU autocast (torch {torch}): linear layers, matmuls and attention (SDPA) run in the low "
                  "precision, so the W_q/W_k inputs (ExPE's p_n among them) and RoPE's rotated q/k are cast there; "
                  "layer/RMS norms, softmax statistics and the cross-entropy stay fp32. On CPU, bf16 uses the CPU's "
                  "bf16 instructions where present; fp16 is computed through conversion (slow, but exact to the "
                  "format). On CUDA the same autocast lists apply.")


def _est(values) -> Est | str:
    iv = stats.t_interval(list(values))
    return Est(iv.mean, iv.half, iv.n) if iv.n else "not run (no result)"


def inside_L(config: dict, models: list[str]) -> set[float]:
    """The distances (in L) whose whole retrieval window fits in every model's training length L: the
    probe's positive control."""
    r = config["beyond"]["retrieval"]
    Ls = {C.model_spec(config, m)["train"]["seq_len"] for m in models}
    return {d for d in r["distances"] if all(C.retrieval_window(L, d, r["segment"], r["prefix"]) <= L for L in Ls)}


def retrieval_table(df: pd.DataFrame, models: list[str], lab: dict, caption: str, inside: set[float] = frozenset()) -> Table:
    d = df[df.probe == "retrieval"]
    xs = sorted(d.x.unique()) if not d.empty else []
    t = Table("retrieval", "Repeat retrieval: loss drop on a repeated span D tokens after its first copy (nats/token)",
              caption, ["Model", "gain vs"] + [f"D={x:g}L" + (" (inside L)" if x in inside else "") for x in xs])
    for m in models:
        for metric, what in (("gain_vs_control", "control"), ("gain_vs_first", "first copy")):
            cells = [lab.get(m, m), what]
            for x in xs:
                v = d[(d.model == m) & (d.metric == metric) & (d.x == x)]["value"]
                cells.append(_est(v) if not v.empty else "not run (no result)")
            t.add(cells, model=m, variant="base", source=";".join(sorted(set(d[d.model == m].source))))
    t.notes += [INTERVAL_NOTE.split(" '(paper)'")[0],
                "A held-out span A is repeated so that its second copy starts exactly D tokens after the first, "
                "inside one window. 'control': the same window with the first copy replaced by other held-out text "
                "(same positions, nothing to copy): the gain isolates retrieval. 'first copy': the loss on the first "
                "copy minus the second (the copy also moves to a later position). A model that cannot attend D "
                "tokens back shows no gain at D.",
                "Positive control: in a column marked (inside L) the whole window (prefix, both copies and the filler) "
                "fits in one training window, so a model that copies at all gains there. A model without a gain "
                "against the control inside L (an interval that includes 0) shows no evidence of copying held-out spans; "
                "its columns beyond L say nothing about extrapolation." if inside else
                "No distance of this run fits one training window: there is no positive control (a model that shows "
                "no gain may not copy at all); add a distance such as 0.25 to beyond.retrieval.distances.",
                "Prompts are drawn from each model's training seed: different seeds see different spans."]
    return t


def passkey_accuracy(d: pd.DataFrame, model: str, x, metric: str = "accuracy") -> tuple[int, int, float, float, float] | None:
    """Trials pooled over seeds (each seed's prompts are its own, so the trials are independent):
    (successes, trials, accuracy, Wilson 95% lo, hi); None where nothing ran."""
    sel = d[(d.model == model) & (d.metric == metric) & (d.x == x)]
    if sel.empty:
        return None
    n = int(sel["n"].sum())
    k = int(round((sel["value"] * sel["n"]).sum()))
    p, lo, hi = stats.wilson(k, n)
    return k, n, p, lo, hi


def passkey_table(df: pd.DataFrame, models: list[str], lab: dict, caption: str, chance: float,
                  keys_note: str = "") -> Table:
    d = df[df.probe == "passkey"]
    xs = sorted(d.x.unique()) if not d.empty else []
    t = Table("passkey", "Passkey retrieval (Mohtashami & Jaggi 2023): accuracy by rank and by greedy match",
              caption, ["Model", "score"] + [f"ev={int(x)}" for x in xs])
    for m in models:
        for metric, what in (("accuracy", "rank 1 of candidates"), ("greedy_exact", "greedy exact match")):
            cells = [lab.get(m, m), what]
            for x in xs:
                acc = passkey_accuracy(d, m, x, metric)
                why = d[(d.model == m) & (d.metric == "status") & (d.x == x)]["value"]
                if acc is None:
                    cells.append(why.iloc[0] if not why.empty else "not run (no result)")
                    continue
                _, _, p, lo, hi = acc
                cells.append(f"{p:.2f} [{lo:.2f}, {hi:.2f}]")
            t.add(cells, model=m, variant="base", source=";".join(sorted(set(d[d.model == m].source))))
    t.digits = 2
    t.notes += ["Accuracy over all trials of all seeds with its 95% Wilson interval [lo, hi]; each seed draws its own "
                "prompts (keys, depths, filler) from its training seed, so the pooled trials are independent.",
                f"Rank accuracy: the true key's log-likelihood is the highest of the candidate keys (chance "
                f"{chance:.0%}; ties count against the true key). Greedy exact: every key token is the model's argmax "
                "(greedy decoding would produce the key). Both are reported as measured, at chance or not."]
    if keys_note:
        t.notes.append(keys_note)
    return t


def precision_table(df: pd.DataFrame, models: list[str], lab: dict, precisions: list[str], caption: str) -> Table:
    d = df[df.probe.str.startswith("precision:")]
    xs = sorted(d.x.unique()) if not d.empty else []
    t = Table("precision", "Evaluation precision: loss in fp32 and its change in bf16 / fp16", caption,
              ["Model", "precision"] + [f"ev={int(x)}" for x in xs])
    for m in models:
        for p in precisions:
            cells = [lab.get(m, m), p if p == "fp32" else f"{p} − fp32"]
            for x in xs:
                sel = d[(d.model == m) & (d.x == x)]
                if p == "fp32":
                    v = sel[sel.probe == "precision:fp32"]["value"]
                    cells.append(_est(v) if not v.empty else "not run (no result)")
                    continue
                a = sel[sel.probe == f"precision:{p}"].set_index("seed")["value"]
                b = sel[sel.probe == "precision:fp32"].set_index("seed")["value"]
                diff = (a - b).dropna()
                cells.append(_est(diff) if not diff.empty else "not run (no result)")
            t.add(cells, model=m, variant=p, source=";".join(sorted(set(d[d.model == m].source))))
    t.notes += [INTERVAL_NOTE.split(" '(paper)'")[0], PRECISION_NOTE.format(torch=torch.__version__),
                "Rows 'bf16 − fp32' and 'fp16 − fp32': the same model and windows, paired per seed."]
    return t


def training_precision_table(df: pd.DataFrame, pairs: list[tuple[str, str]], lab: dict, caption: str) -> Table:
    d = df[df.probe.str.startswith("precision:")]
    xs = sorted(d.x.unique()) if not d.empty else []
    t = Table("precision_training", "Trained in bf16 vs fp32 (same seeds), evaluated in fp32 and in bf16", caption,
              ["Model", "evaluated in"] + [f"ev={int(x)}" for x in xs])
    for base, bf in pairs:
        for who in (base, bf):
            for p in ("fp32", "bf16"):
                cells = [lab.get(who, who), p]
                for x in xs:
                    v = d[(d.model == who) & (d.x == x) & (d.probe == f"precision:{p}")]["value"]
                    cells.append(_est(v) if not v.empty else "not run (no result)")
                t.add(cells, model=who, variant=p, source="")
    t.notes.append(INTERVAL_NOTE.split(" '(paper)'")[0])
    return t


def position_values_table(config: dict, models: list[str], lab: dict, precisions: list[str], multiples: list[int]) -> Table:
    from expe.evaluation.probes import distinct_positions
    from expe.nn.model import ModelConfig, Transformer

    t = Table("position_values", "Distinct positions an encoding keeps apart in each precision", "Out of the "
              "ev x L positions of a window; computed from each model's encoding at its own L (no training needed)",
              ["Model", "precision"] + [f"ev={k}" for k in multiples])
    for m in models:
        spec = C.model_spec(config, m)
        mc = ModelConfig(**{**spec["model"], "vocab_size": 256, "seq_len": spec["train"]["seq_len"]})
        enc = Transformer(mc).pe
        L = spec["train"]["seq_len"]
        for p in precisions:
            cells = [lab.get(m, m), p]
            for k in multiples:
                n = distinct_positions(enc, k * L, DTYPES[p])
                cells.append(f"{n} / {k * L}" if n is not None else "no position values")
            t.add(cells, model=m, variant=p, source="computed")
    t.notes.append("Position values: ExPE/ExQPE p_n, RoPE's cos/sin table, the sinusoidal table, ALiBi's bias per "
                   "distance (distinct distances); NoPE has none. Two positions whose values are equal after the cast "
                   "are indistinguishable to the attention.")
    return t


def retrieval_plot(df: pd.DataFrame, models: list[str], lab: dict, inside: set[float],
                   groups: list[list[str]] | None = None):
    """Gain against the control by distance, 95% seed bands; the distances inside L shaded (the positive
    control); at most 5 models per panel (`groups`), stacked panels sharing both axes."""
    d = df[(df.probe == "retrieval") & (df.metric == "gain_vs_control")]
    groups = groups or [list(g) for g in chunks({m: m for m in models})]
    fig, axes = plt.subplots(len(groups), 1, figsize=(3.5, 0.5 + 2.0 * len(groups)), sharex=True, sharey=True,
                             squeeze=False)
    for ax, group in zip(axes[:, 0], groups):
        for m in group:
            g = d[d.model == m]
            if g.empty:
                continue
            s = seed_summary(g, ["x"]).sort_values("x")
            band(ax, s["x"], s, {**style(models.index(m)), "ms": 3, "lw": 1.0}, lab.get(m, m), y="mean")
        ax.axhline(0.0, color="grey", ls=":", lw=0.8)
        if inside:
            ax.axvspan(min(inside) / 1.2, max(inside) * 1.2, color="grey", alpha=0.12, lw=0)
        ax.axvline(1, color="grey", ls="--", lw=0.6)
        ax.set_xscale("log", base=2)
        ax.set_ylabel("gain vs control (nats/token)", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, frameon=False, handlelength=2.4, loc="best")
    xs = sorted(d.x.unique())
    if xs:
        axes[-1, 0].set_xticks(xs, [f"{x:g}" for x in xs])
        axes[-1, 0].xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    axes[-1, 0].set_xlabel("distance D / L (shaded: whole probe inside L, the positive control)", fontsize=7)
    axes[0, 0].set_title("Repeat retrieval: does the model copy a span D tokens back?", fontsize=8)
    fig.tight_layout()
    return fig


def panel_groups(config: dict, models: list[str]) -> list[list[str]]:
    """The probed models by paper table (Section 4.1, then the Llama-architecture rows, then any other),
    each split into panels of at most 5."""
    groups, seen = [], set()
    for table in ("section41", "large"):
        ms = [m for m in dict.fromkeys(C.parse_ref(r)[0] for r in config["tables"].get(table, {}).values())
              if m in models and m not in seen]
        seen.update(ms)
        groups += [list(g) for g in chunks({m: m for m in ms})]
    rest = [m for m in models if m not in seen]
    return groups + [list(g) for g in chunks({m: m for m in rest})]


def passkey_plot(df: pd.DataFrame, models: list[str], lab: dict, chance: float, groups: list[list[str]] | None = None):
    """Rank accuracy against the window length with the table's 95% Wilson intervals (trials pooled over
    seeds); at most 5 models per panel (`groups`), stacked panels sharing both axes, points dodged apart."""
    d = df[df.probe == "passkey"]
    groups = groups or [list(g) for g in chunks({m: m for m in models})]
    fig, axes = plt.subplots(len(groups), 1, figsize=(3.5, 0.5 + 2.0 * len(groups)), sharex=True, sharey=True,
                             squeeze=False)
    for ax, group in zip(axes[:, 0], groups):
        for j, m in enumerate(group):
            pts = [(x, passkey_accuracy(d, m, x)) for x in sorted(d[d.model == m].x.unique())]
            pts = [(x, a) for x, a in pts if a is not None]
            if not pts:
                continue
            x = np.array([p[0] for p in pts], dtype=float) * 2 ** (0.07 * (j - (len(group) - 1) / 2))  # dodge
            p = np.array([a[2] for _, a in pts])
            err = np.array([[a[2] - a[3] for _, a in pts], [a[4] - a[2] for _, a in pts]])
            st = style(models.index(m))
            ax.errorbar(x, p, yerr=err, color=st["color"], marker=st["marker"], ls=st["ls"], ms=3, lw=1.0,
                        capsize=2, elinewidth=0.8, label=lab.get(m, m))
        ax.axhline(chance, color="grey", ls=":", lw=0.8, label=f"chance ({chance:.0%})")
        ax.set_xscale("log", base=2)
        evs = sorted(d.x.unique())
        if evs:
            ax.set_xticks(evs, [f"{x:g}" for x in evs])
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_ylim(-0.03, 1.03)
        ax.set_ylabel("passkey accuracy", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, frameon=False, handlelength=2.4, loc="best")
    axes[-1, 0].set_xlabel("window / L (ev)", fontsize=7)
    axes[0, 0].set_title("Passkey retrieval: rank-1 accuracy, 95% Wilson intervals", fontsize=8)
    fig.tight_layout()
    return fig


def precision_plot(df: pd.DataFrame, models: list[str], lab: dict):
    d = df[df.probe.str.startswith("precision:")]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), sharey=True)
    for ax, p in zip(axes, ("bf16", "fp16")):
        for i, m in enumerate(models):
            a = d[(d.model == m) & (d.probe == f"precision:{p}")].set_index(["seed", "x"])["value"]
            b = d[(d.model == m) & (d.probe == "precision:fp32")].set_index(["seed", "x"])["value"]
            g = (a - b).dropna().rename("value").reset_index()
            if g.empty:
                continue
            s = seed_summary(g, ["x"]).sort_values("x")
            band(ax, s["x"], s, style(i), lab.get(m, m))
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("ev")
        ax.set_ylabel("loss − fp32 loss (nats)")
        ax.set_title(f"evaluated in {p}", fontsize=9)
    legend(axes[1], loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle("Evaluation precision: change of the loss against fp32 (95% seed bands)", fontsize=9)
    fig.tight_layout()
    return fig


def _cell(t: Table, c) -> str:
    return t.text(c).replace(" (1 seed)", "")


def positive_control_sentence(r: Table) -> list[str]:
    """The positive control, read at every distance whose whole probe fits in L: the range of the gains
    against the control there, and which models' 95% intervals lie above 0 at one of those distances (they
    copy inside L; with k distances a model that copies nothing passes by chance with probability up to
    1 - 0.975^k, which the sentence states). An interval that includes 0 is no evidence either way: it never
    says "does not copy"."""
    cols = [j for j, c in enumerate(r.columns) if c.endswith("(inside L)")]
    rows = [row for row in r.rows if row[1] == "control" and any(isinstance(row[j], Est) and row[j].n for j in cols)]
    if not rows:
        return []
    ests = {row[0]: {r.columns[j].split(" ")[0]: row[j] for j in cols if isinstance(row[j], Est) and row[j].n}
            for row in rows}
    means = [e.mean for by_col in ests.values() for e in by_col.values()]
    copies = {m: [(c, e) for c, e in by_col.items() if e.half is not None and e.mean - e.half > 0]
              for m, by_col in ests.items()}
    copies = {m: v for m, v in copies.items() if v}
    others = [m for m in ests if m not in copies]
    names = [r.columns[j].split(" ")[0] for j in cols]
    text = (f"Positive control ({', '.join(names)}: the whole probe inside one training window): gains against the "
            f"control from {min(means):+.3f} to {max(means):+.3f} nats/token; {len(copies)} of {len(ests)} models copy "
            f"a held-out span there (95% interval above 0 at {'one of these distances' if len(names) > 1 else 'it'}"
            + (f"; each a one-sided 2.5% test, so a model that copies nothing passes by chance with probability "
               f"up to {1 - 0.975 ** len(names):.0%}" if len(names) > 1 else "") + ")"
            + (": " + ", ".join(f"{m} " + " and ".join(f"{e.mean:+.3f} at {c}" for c, e in v) for m, v in copies.items())
               if copies else ""))
    if not copies:
        text += (". No interval lies above 0 inside L (no evidence of copying, which is not evidence of its absence), "
                 "so no column beyond L can show whether a model extrapolates")
    elif others:
        text += (f". For {', '.join(others)} no interval inside L lies above 0: their columns beyond L cannot show "
                 "whether they extrapolate")
    return [text + ".", ""]


def beyond_summary(tables: list[Table], chance: float | None = None) -> str:
    """The README's beyond-the-paper section, generated from the tables."""
    by = {t.name: t for t in tables}
    lines = []
    r = by["retrieval"]
    if r.rows:
        lines += [f"Retrieval gain against the control (nats/token; {', '.join(r.columns[2:])}), mean ± 95% interval "
                  "over seeds (`beyond/retrieval.md`):", ""]
        lines += [f"- {row[0]}: " + " / ".join(_cell(r, c) for c in row[2:]) for row in r.rows if row[1] == "control"]
        lines.append("")
        lines += positive_control_sentence(r)
    p = by["passkey"]
    if p.rows:
        lines += [f"Passkey accuracy (rank 1 of the candidates; {', '.join(p.columns[2:])}) with 95% Wilson intervals "
                  f"(`beyond/passkey.md`" + (f"; chance {chance:.0%}" if chance else "") + "):", ""]
        lines += [f"- {row[0]}: " + " / ".join(_cell(p, c) for c in row[2:]) for row in p.rows
                  if row[1].startswith("rank")]
        lines.append("")
    q = by["precision"]
    if q.rows:
        lines += [f"Loss change when evaluated in low precision instead of fp32 ({', '.join(q.columns[2:])}; "
                  "`beyond/precision.md`):", ""]
        lines += [f"- {row[0]}, {row[1]}: " + " / ".join(_cell(q, c) for c in row[2:]) for row in q.rows
                  if row[1] != "fp32"]
        lines.append("")
    return "\n".join(lines) + "\n"


def build_beyond(config: dict, index_path: str | Path, out_dir: str | Path) -> list[Table]:
    out = ensure_dir(out_dir)
    plots = ensure_dir(out / "plots")
    df = Results(index_path).probes
    lab = C.labels(config)
    models = C.beyond_models(config)
    pmodels = C.precision_models(config)
    bey = config["beyond"]
    seeds = sorted({len(C.seeds(config, m)) for m in models})
    caption = (f"Run `{config['run_name']}`, {'/'.join(map(str, seeds))} seed(s) per model, held-out "
               f"{config['eval']['split']} documents")
    pk = bey["passkey"]
    chance = 1 / pk["candidates"]
    inside = inside_L(config, models)
    keys_note = (f"Keys and the {pk['candidates'] - 1} other candidates of each prompt: distinct words drawn from the "
                 f"{pk['pool']} most frequent single-token words of the training split (lower-case, at least 3 letters, "
                 "whole words, none of the prompt's own tokens; the list is in each result file, key_pool): tokens whose "
                 "embeddings the model has trained, so a model that copies can succeed. The needle reads 'The pass key "
                 "is K. Remember it. K is the pass key.'" if pk["keys"] == "words" else
                 f"Keys: random {pk['digits']}-digit numbers, candidates of the same form; a corpus with few digits "
                 "leaves their embeddings untrained and the probe at chance whatever the attention does.")
    pairs = [(m, m + C.BF16_SUFFIX) for m in bey["bf16_training"]]
    tables = [
        retrieval_table(df, models, lab, caption, inside),
        passkey_table(df, models, lab, caption, chance, keys_note),
        precision_table(df, pmodels, lab, bey["precision"]["precisions"], caption),
        training_precision_table(df, pairs, lab, caption),
        position_values_table(config, models, lab, bey["precision"]["precisions"], bey["precision"]["multiples"]),
    ]
    note = f"Config sha256 {config_hash(config)[:12]}; tidy data in data/beyond.csv (source files with their sha256)."
    for t in tables:
        t.notes.append(note)
        t.write(out)
    ensure_dir(out / "data")
    write_text(out / "data" / "beyond.csv", df.to_csv(index=False), what="tidy data beyond.csv",
               kept="result files are kept; free space and rerun")
    groups = panel_groups(config, models)
    save(retrieval_plot(df, models, lab, inside, groups), plots, "retrieval")
    save(passkey_plot(df, models, lab, chance, groups), plots, "passkey")
    save(precision_plot(df, models, lab), plots, "precision")
    summary = beyond_summary(tables, chance)
    kept = "result files are kept; free space and rerun"
    write_text(out / "summary.md", summary, what="summary", kept=kept)
    lines = ["# Beyond the paper: is long context used, and does precision matter?", "",
             "## Summary", "", summary, "",
             "Produced by `snakemake beyond_paper`. Every number comes from `data/beyond.csv` (with the result file "
             "and its sha256).", ""]
    for t in tables:
        lines += [t.markdown(), ""]
    for p, cap in (("retrieval", "Repeat retrieval"), ("passkey", "Passkey"), ("precision", "Evaluation precision")):
        lines += [f"### {cap}", "", f"![{cap}](plots/{p}.png)", "", f"[PDF](plots/{p}.pdf)", ""]
    write_text(out / "README.md", "\n".join(lines), what="index page", kept=kept)
    return tables
