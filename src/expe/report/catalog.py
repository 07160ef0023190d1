"""The one list of what the report writes: table and plot names (the workflow's outputs and the
builders in tables.py / plots.py / beyond.py are keyed by these). Light: no matplotlib, no torch."""

from expe.report import paper_numbers as P

TABLES = ("section41", "ablations", "large", "scaling", "benchmarks", "hyperparameters", "primary", "differences",
          "context", "context_use", "sliding", "speed")
PLOTS = ("loss_vs_length", "per_position", "context", "training_curves", "position_values")
BEYOND_TABLES = ("retrieval", "passkey", "precision", "precision_training", "position_values")
BEYOND_PLOTS = ("retrieval", "passkey", "precision")


# The paper tables drawn as loss-vs-length panels: title and the paper's numbers of each.
TABLE_TITLES = {"section41": ("Section 4.1", P.SECTION41), "ablations": ("Table 7 ablations", P.ABLATIONS),
                "large": ("Section 4.2 (Llama architecture)", P.LARGE), "scaling": ("Section 4.3 scaling", P.SCALING)}


def panels(config: dict) -> list[tuple[str, str, dict[str, str], dict]]:
    """(file key, title, rows label -> ref, the paper's values): one single-column figure per paper table;
    the title names the config's rows that are not the paper's ("+ NoPE, ALiBi")."""
    out = []
    for table, (title, paper) in TABLE_TITLES.items():
        rows = config["tables"].get(table, {})
        if not rows:
            continue
        extra = [label for label in rows if label not in paper]
        if extra and table != "scaling":
            title = f"{title} (+ {', '.join(extra)})"
        out.append((table, title, rows, paper))
    return out


def series_groups(rows: dict[str, str], most: int = 5) -> list[dict[str, str]]:
    """The rows of a table in panels of at most `most` lines: a model and its inference-time variants stay
    together (the scaling table: ExPE M with its scales, Llama M with PI/NTK/YaRN/DCA); a run of distinct
    models is split into panels of nearly equal size (6 rows: 3 + 3)."""
    units: list[list[tuple[str, str]]] = []  # a model with its variants, or a run of plain models
    for label, ref in rows.items():
        last = units[-1] if units else None
        same_model = last and last[-1][1].split("@")[0] == ref.split("@")[0]
        plain_run = last and "@" not in ref and all("@" not in r for _, r in last)
        if same_model or (plain_run and not _has_variants(rows, ref) and not any(_has_variants(rows, r) for _, r in last)):
            last.append((label, ref))
        else:
            units.append([(label, ref)])
    out: list[dict[str, str]] = []
    for u in units:
        n = -(-len(u) // most)  # panels for this unit, as equal as possible
        size = -(-len(u) // n)
        out += [dict(u[i : i + size]) for i in range(0, len(u), size)]
    return out


def _has_variants(rows: dict[str, str], ref: str) -> bool:
    return any(r.startswith(ref.split("@")[0] + "@") for r in rows.values())


def chunks(rows: dict, most: int = 5) -> list[dict]:
    """Rows split into consecutive groups of at most `most`, as even as possible (6 rows: 3 + 3), so a
    panel never draws more lines than a reader can tell apart."""
    items = list(rows.items())
    n = -(-len(items) // most) if items else 1
    size = -(-len(items) // n) if items else 0
    return [dict(items[i : i + size]) for i in range(0, len(items), size)] if items else []


def plot_names(config: dict) -> list[str]:
    """Every plot file name (without extension) the plots step writes for this config."""
    keys = [key for key, *_ in panels(config)]
    return list(PLOTS) + [f"loss_vs_length_{k}" for k in keys] + [f"context_use_{k}" for k in keys]


# The recall study (paper_tables/recall/): one accuracy table, one accuracy-vs-length figure, one figure of
# training curves per task and one heatmap per task and encoding; the copy-augmented language models.
RECALL_TABLES = ("training", "augmented_loss", "augmented_retrieval")
RECALL_PLOTS = ("augmented_loss", "augmented_retrieval")


def recall_tables(config: dict) -> list[str]:
    return [f"{task}" for task in config["recall"]["tasks"]] + list(RECALL_TABLES)


def recall_plots(config: dict) -> list[str]:
    from expe.config import slug

    rec = config["recall"]
    out = []
    for task in rec["tasks"]:
        out += [f"{task}_vs_length", f"{task}_training", f"{task}_training_longer"]
        out += [f"{task}_heatmap_{slug(label)}" for label in rec["encodings"]]
    return out + list(RECALL_PLOTS)
