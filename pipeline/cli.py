"""The ``linewatch`` command line: one sub-command per job, each importing only what it needs."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from config.errors import ConfigError


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


def _cmd_users(args: argparse.Namespace) -> int:
    import getpass

    from config.service import load_settings
    from pipeline.store.errors import StoreError
    from pipeline.store.schema import upgrade
    from pipeline.store.store import Store
    from pipeline.store.users import UserError, add_user, create_token, list_accounts, set_password

    settings = load_settings(**({"data_dir": args.data_dir} if args.data_dir else {}))
    try:
        upgrade(settings.effective_database_url)
        with Store.open(settings.effective_database_url) as store:
            if args.users_command == "list":
                for user in list_accounts(store):
                    state = "\tdisabled" if user["disabled"] else ""
                    print(f"{user['username']}\t{user['role']}{state}")
                return 0
            if args.users_command == "token":
                print(create_token(store, args.name, args.label))
                return 0
            if args.password_stdin:
                password = sys.stdin.readline().rstrip("\n")
            else:
                password = getpass.getpass(f"password for {args.name}: ")
                if getpass.getpass("again: ") != password:
                    print("linewatch users: the passwords differ", file=sys.stderr)
                    return 2
            if args.users_command == "add":
                add_user(store, args.name, password, args.role)
                print(f"added {args.name} ({args.role})")
            else:
                set_password(store, args.name, password)
                print(f"password of {args.name} changed")
    except (UserError, StoreError) as e:
        print(f"linewatch users: {e}", file=sys.stderr)
        return 2
    return 0


def _cmd_train_decoder(args: argparse.Namespace) -> int:
    from workers.decoder.training import TrainSettings, loss_log_path, train_decoder
    from workers.errors import WorkerError

    settings = TrainSettings(
        normal=list(args.normal),
        backbone=args.backbone,
        out=args.out,
        epochs=args.epochs,
        product=args.product,
        batch_size=args.batch_size,
        lr=args.lr,
        device=args.device,
        seed=args.seed,
        resume=args.resume,
    )
    try:
        result = train_decoder(settings)
    except (WorkerError, ValueError) as e:  # known failures: say what, no traceback
        print(f"linewatch train-decoder: {e}", file=sys.stderr)
        return 2
    last = f"{result.losses[-1]:.4f}" if result.losses else "n/a"
    print(f"decoder saved to {args.out} (last epoch loss {last}; log {loss_log_path(args.out)})")
    return 0


def _with_stations(role: Callable[..., int]) -> Callable[[argparse.Namespace], int]:
    """Resolve settings and stations once; configuration errors print as file:line messages."""

    def run(args: argparse.Namespace) -> int:
        from pipeline.errors import PipelineError
        from pipeline.roles import resolve
        from pipeline.store.errors import StoreError
        from workers.errors import WorkerError

        try:
            settings, stations = resolve(args.config, args.data_dir)
        except ConfigError as e:
            print(f"linewatch {args.command}: configuration error\n{e}", file=sys.stderr)
            return 2
        from pipeline import log_format

        log_format.configure(
            "DEBUG" if args.verbose else settings.log_level, settings.log_format, args.command
        )
        try:
            if getattr(args, "check", False):
                return _check(args, settings, stations)
            if hasattr(args, "metrics_port"):
                from pipeline import metrics

                device = getattr(args, "device", None)
                metrics.enable(args.command, settings, stations, _redis(settings), args.metrics_port, device)
            return role(args, settings, stations)
        except (WorkerError, PipelineError, StoreError) as e:  # known failures: say what, no traceback
            print(f"linewatch {args.command}: {e}", file=sys.stderr)
            return 2

    return run


def _redis(settings) -> str:
    from pipeline.roles import redis_url

    return redis_url(settings)


def _check(args, settings, stations) -> int:
    from pipeline.health import run_checks

    return run_checks(args.command, settings, stations, _redis(settings))


def _run(args, settings, stations) -> int:
    from pipeline.launcher import launch

    return launch(settings, stations, args.config, args.host, args.port)


def _capture(args, settings, stations) -> int:
    from pipeline.roles import capture_main

    return capture_main(settings, stations)


def _worker(args, settings, stations) -> int:
    from pipeline.roles import worker_main

    return worker_main(
        settings,
        stations,
        args.device,
        args.claim_idle_ms,
        args.batch_size,
        args.max_wait_ms,
        args.threads,
        args.hang_timeout,
    )


def _explain(args, settings, stations) -> int:
    from pipeline.roles import explain_main

    return explain_main(settings, stations, args.device)


def _recorder(args, settings, stations) -> int:
    from pipeline.roles import recorder_main

    return recorder_main(settings, stations)


def _dashboard(args, settings, stations) -> int:
    from dashboards.app import dashboard_main
    from pipeline.roles import redis_url

    return dashboard_main(settings, stations, redis_url(settings), args.host, args.port)


def _status(args, settings, stations) -> int:
    from pipeline.roles import redis_url
    from pipeline.status import status_main

    return status_main(settings, stations, redis_url(settings), args.json)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text!r}")
    return value


def _port(text: str) -> int:
    value = _positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 1-65535, got {text!r}")
    return value


def _role_parser(
    sub: argparse._SubParsersAction, name: str, help: str, func: Callable, service: bool = True
) -> argparse.ArgumentParser:
    """A sub-command taking stations; a ``service`` (a long-running role) also gets --check and metrics."""
    p = sub.add_parser(name, help=help)
    p.add_argument("--config", action="append", type=Path, help="station YAML file or folder (repeatable)")
    p.add_argument("--data-dir", type=Path, default=None, help="data dir (default LINEWATCH_DATA_DIR)")
    if service:
        p.add_argument(
            "--check",
            action="store_true",
            help="check Redis, database, weights... this role needs; exit 0 if ok",
        )
        p.add_argument(
            "--metrics-port",
            type=_port,
            default=None,
            help="serve Prometheus metrics here (default: LINEWATCH_METRICS_PORT + the role's offset)",
        )
    p.set_defaults(func=_with_stations(func))
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="linewatch", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    run = _role_parser(
        sub, "run", "everything on one machine (the demo station without --config)", _run, service=False
    )
    for p in (run, _role_parser(sub, "dashboard", "the web dashboard", _dashboard)):
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=8080)
    _role_parser(sub, "capture", "cameras into Redis frame streams", _capture)
    worker = _role_parser(sub, "worker", "inspect frames from Redis on one device", _worker)
    worker.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default LINEWATCH_DEVICE)")
    worker.add_argument(
        "--claim-idle-ms",
        type=_positive_int,
        default=None,
        help="take over frames a silent worker left pending this long (default 15000)",
    )
    worker.add_argument("--batch-size", type=_positive_int, default=16, help="frames per inspection batch")
    worker.add_argument(
        "--max-wait-ms", type=_positive_int, default=30, help="how long a partial batch waits for more frames"
    )
    worker.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="torch threads for a CPU worker (default: one per core; linewatch run gives each of its "
        "CPU workers one)",
    )
    worker.add_argument(
        "--hang-timeout",
        type=_positive_int,
        default=None,
        help="seconds a batch may stay in the model before the worker counts the device as hung and "
        "exits for a restart (default 300)",
    )
    explain = _role_parser(sub, "explain", "LLM verdicts on flagged frames, one per defect episode", _explain)
    explain.add_argument(
        "--device", default=None, help="transformers backend: cpu, cuda or cuda:N (default LINEWATCH_DEVICE)"
    )
    _role_parser(sub, "recorder", "results from Redis into the SQL store", _recorder)
    status = _role_parser(sub, "status", "state of stations, streams and processes", _status, service=False)
    status.add_argument("--json", action="store_true")

    cfg = sub.add_parser("config", help="station configuration tools")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    val = cfg_sub.add_parser("validate", help="check station YAML files; exit 0 if all are valid")
    val.add_argument("files", nargs="+", help="station YAML files or folders of them")
    val.set_defaults(func=_cmd_config_validate)

    ev = sub.add_parser("eval", help="measure accuracy on an MVTec-AD-layout dataset")
    from workers.evaluation.options import add_eval_arguments

    add_eval_arguments(ev)
    ev.set_defaults(func=_cmd_eval)

    train = sub.add_parser(
        "train-decoder", help="train the zero-shot decoder's projections on synthetic anomalies"
    )
    train.add_argument("--normal", nargs="+", type=Path, required=True, help="folder(s) of normal images")
    train.add_argument("--backbone", required=True, help="open_clip:MODEL/PRETRAINED (as in the station)")
    train.add_argument("--out", type=Path, required=True, help="checkpoint to write (.safetensors)")
    train.add_argument("--epochs", type=_positive_int, default=20, help="passes over the normal images")
    train.add_argument("--product", default="object", help="product name for the prompts, e.g. 'bottle'")
    train.add_argument("--batch-size", type=_positive_int, default=8)
    train.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    train.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--resume", action="store_true", help="continue the training saved in --out")
    train.set_defaults(func=_cmd_train_decoder)

    users = sub.add_parser("users", help="dashboard users: add, passwd, list")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    for name, text in (("add", "add a user"), ("passwd", "change a user's password")):
        cmd = users_sub.add_parser(name, help=text)
        cmd.add_argument("name", help="user name")
        if name == "add":
            cmd.add_argument("--role", choices=("viewer", "operator", "admin"), default="viewer")
        cmd.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    users_sub.add_parser("list", help="list users and roles")
    token = users_sub.add_parser("token", help="print a new API token acting as the user (shown once)")
    token.add_argument("name", help="user name")
    token.add_argument("--label", required=True, help="what will use the token, e.g. 'MES bridge'")
    for cmd in users_sub.choices.values():
        cmd.add_argument("--data-dir", type=Path, default=None, help="data dir (default LINEWATCH_DATA_DIR)")
    users.set_defaults(func=_cmd_users)

    demo = sub.add_parser("demo", help="offline accuracy demo on generated parts (no pipeline)")
    demo.add_argument("--data-dir", type=Path, default=None, help="where demo data is written")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # migration chatter at every start hides what the roles say
        logging.getLogger("alembic").setLevel(logging.WARNING)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
