"""The one list of what the report writes: table and plot names (the workflow's outputs and the
builders in tables.py / plots.py / beyond.py are keyed by these). Light: no matplotlib, no torch."""

from expe.report import paper_numbers as P

TABLES = ("section41", "ablations", "large", "scaling", "benchmarks", "hyperparameters", "differences", "context",
          "sliding", "speed")
PLOTS = ("loss_vs_length", "per_position", "context", "training_curves", "position_values")
BEYOND_TABLES = ("retrieval", "passkey", "precision", "precision_training", "position_values")
BEYOND_PLOTS = ("retrieval", "passkey", "precision")


# The paper tables drawn as loss-vs-length panels: title and the paper's numbers of each.
TABLE_TITLES = {"section41": ("Section 4.1", P.SECTION41), "ablations": ("Ablations (Table 7)", P.ABLATIONS),
                "large": ("Section 4.2 (Llama architecture)", P.LARGE), "scaling": ("Section 4.3", P.SCALING)}


def panels(config: dict) -> list[tuple[str, str, dict[str, str], dict]]:
    """(file key, title, rows label -> ref, the paper's values): one panel per paper table; the title
    names the config's rows that are not the paper's ("+ NoPE, ALiBi"). The scaling table is split in
    two (ExPE/ExQPE with the scale swept; RoPE variants and the other baselines) so lines stay apart."""
    out = []
    for table, (title, paper) in TABLE_TITLES.items():
        rows = config["tables"].get(table, {})
        if not rows:
            continue
        if table == "scaling":
            expe = {k: v for k, v in rows.items() if "ExPE" in k or "ExQPE" in k}
            rest = {k: v for k, v in rows.items() if k not in expe}
            if expe:
                out.append(("scaling_expe", "Section 4.3: ExPE / ExQPE, scale swept", expe, paper))
            if rest:
                out.append(("scaling_baselines", "Section 4.3: RoPE variants and baselines", rest, paper))
            continue
        extra = [label for label in rows if label not in paper]
        if extra and table == "section41":
            title = f"{title} (+ {', '.join(extra)})"
        out.append((table, title, rows, paper))
    return out


def plot_names(config: dict) -> list[str]:
    """Every plot file name (without extension) the plots step writes for this config."""
    return list(PLOTS) + [f"loss_vs_length_{key}" for key, *_ in panels(config)]


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
