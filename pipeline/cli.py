"""The ``linewatch`` command line: one sub-command per job, each importing only what it needs."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path


def _cmd_config_validate(args: argparse.Namespace) -> int:
    from config.loader import validate_files

    problems = validate_files([Path(p) for p in args.files])
    for message in problems:
        print(message, file=sys.stderr)
    if not problems:
        print(f"{len(args.files)} file(s) valid")
    return 1 if problems else 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from workers.evaluation.runner import run_eval_command

    return run_eval_command(args)


def _cmd_demo(args: argparse.Namespace) -> int:
    from workers.evaluation.demo import run_demo_command

    return run_demo_command(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="linewatch", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    cfg = sub.add_parser("config", help="station configuration tools")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    val = cfg_sub.add_parser("validate", help="check station YAML files; exit 0 if all are valid")
    val.add_argument("files", nargs="+", help="station YAML files or folders of them")
    val.set_defaults(func=_cmd_config_validate)

    ev = sub.add_parser("eval", help="measure accuracy on an MVTec-AD-layout dataset")
    from workers.evaluation.options import add_eval_arguments

    add_eval_arguments(ev)
    ev.set_defaults(func=_cmd_eval)

    demo = sub.add_parser("demo", help="run the bundled offline demo")
    demo.add_argument("--data-dir", type=Path, default=None, help="where demo data is written")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
