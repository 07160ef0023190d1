"""`expe` command line: one subcommand per workflow step, each with --help. Each module of this package
holds its subcommands' parsers beside their handlers.

Every user-caused failure (ExpeError) prints one line `expe: error: ...` and exits with 2.
"""

from __future__ import annotations

import logging
import sys

from expe.cli.args import Parser
from expe.errors import ExpeError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # stderr and <checkpoints>/train.log


def build_parser() -> Parser:
    from expe.cli import config, data, evaluate, report, train

    p = Parser(prog="expe", description="ExPE reproduction: data, training, evaluation, tables.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for module in (config, data, train, evaluate, report):
        module.add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # a bad argument (one line already printed) or --help
        return e.code if isinstance(e.code, int) else 2
    args.argv = list(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
    from expe import malloc

    malloc.tune()  # before the first tensor: freed activations stay in the heap (expe/malloc.py)
    try:
        args.fn(args)
    except ExpeError as e:
        print(f"expe: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("expe: interrupted", file=sys.stderr)
        _quiet_exit(130)
    return 0


def _quiet_exit(code: int) -> None:
    """Exit now, skipping interpreter teardown: torch's atexit hooks print "FakeTensor cache stats"
    lines after Ctrl-C otherwise."""
    import os

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
