"""`expe validate`, `expe config-doc`, `expe params`: configs and architectures."""

from __future__ import annotations


def cmd_validate(args):
    from expe import config as C
    from expe.data.sources import local_source_files

    cfg = C.load(args.config)
    files = local_source_files(cfg["data"])  # a local corpus must be where data.path says
    runs = sum(len(C.seeds(cfg, m)) for m in cfg["models"])
    corpus = f"; data.path: {len(files)} file{'s' * (len(files) != 1)}" if files else ""
    print(f"{args.config}: valid ({len(cfg['models'])} models, {runs} training runs over their seeds: "
          f"{', '.join(cfg['models'])}{corpus})")


def cmd_config_doc(args):
    from expe import config as C

    text = C.schema_markdown()
    if args.out:
        from expe.io import write_text

        write_text(args.out, text, what="config reference")
    else:
        print(text, end="")


def cmd_params(args):
    from expe.nn.model import Transformer, preset
    from expe.nn.presets import PAPER_PARAMS, PRESETS

    for n in [args.preset] if args.preset else list(PRESETS):
        c = Transformer(preset(n, pe={"name": "nope"})).param_counts()
        paper = PAPER_PARAMS.get(n)
        ref = f"  (paper: {paper[0] / 1e6:.0f}M" + (f", {paper[1] / 1e6:.0f}M non-embedding)" if paper[1] else ")") if paper else ""
        print(f"{n:12s} total {c['total'] / 1e6:8.2f}M  without input embedding {c['non_embedding'] / 1e6:8.2f}M{ref}")


def add_commands(sub) -> None:
    from expe.nn.presets import PRESETS

    sp = sub.add_parser("validate", help="validate a config file and print its model entries",
                        description="validate a config file and print its model entries")
    sp.add_argument("config")
    sp.set_defaults(fn=cmd_validate)

    sp = sub.add_parser("config-doc", help="write config/README.md: every config key, its default and meaning",
                        description="write config/README.md: every config key, its default and meaning")
    sp.add_argument("--out", help="file to write (default: standard output)")
    sp.set_defaults(fn=cmd_config_doc)

    sp = sub.add_parser("params", help="print the parameter counts of the architecture presets",
                        description="print the parameter counts of the architecture presets")
    sp.add_argument("--preset", choices=list(PRESETS), help="one preset (default: all)")
    sp.set_defaults(fn=cmd_params)
