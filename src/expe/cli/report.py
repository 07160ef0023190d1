"""`expe tables`, `expe plots`, `expe beyond-tables`, `expe recall-tables`: the report, from the results index."""

from __future__ import annotations

from expe.cli.args import config


def cmd_tables(args):
    from expe.report.tables import build_all

    build_all(config(args), args.config, args.index, args.out)


def cmd_plots(args):
    from expe.report.plots import build_plots

    build_plots(config(args), args.index, args.out)


def cmd_beyond_tables(args):
    from expe.report.beyond import build_beyond

    build_beyond(config(args), args.index, args.out)


def cmd_recall_tables(args):
    from expe.report.recall import build_recall

    build_recall(config(args), args.index, args.out)


def add_commands(sub) -> None:
    for name, fn, h in (("tables", cmd_tables, "regenerate the paper's tables (Markdown, LaTeX, CSV) and their tidy data"),
                        ("plots", cmd_plots, "draw the paper's plots (PNG and PDF) from results"),
                        ("beyond-tables", cmd_beyond_tables, "tables and plots of the probes and the precision study"),
                        ("recall-tables", cmd_recall_tables, "tables and plots of the recall study (index: "
                                                             "results/<run>/index/recall-<hash>.json)")):
        sp = sub.add_parser(name, help=h, description=h)
        sp.add_argument("--config", required=True, help="config YAML or the workflow's resolved config")
        sp.add_argument("--index", required=True, help="results index JSON (results/<run>/index/<hash>.json)")
        sp.add_argument("--out", required=True, help="output folder")
        sp.add_argument("--no-progress", action="store_true", help="(accepted for symmetry; nothing to show)")
        sp.set_defaults(fn=fn)
