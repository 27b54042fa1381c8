"""`redrive`: run an App, manage the local broker, run the lab, inspect dead letters, and
the everyday chores (topics, produce, consume)."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from redrive.errors import RedriveError

if TYPE_CHECKING:
    from redrive.app import App
    from redrive.observe.server import Server


def _load_app(target: str) -> object:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise SystemExit(f"redrive run: expected 'package.module:app', got {target!r}")
    sys.path.insert(0, ".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SystemExit(f"redrive run: cannot import {module_name!r}: {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise SystemExit(f"redrive run: {module_name!r} has no attribute {attr!r}") from None


def cmd_run(args: argparse.Namespace) -> int:
    from redrive.app import App, importing_for_run
    from redrive.errors import StopTimeout
    from redrive.observe.logs import configure, log_events

    configure(args.log_level or ("DEBUG" if args.verbose else "INFO"), args.log_format)
    if args.workers > 1:  # a supervisor of N `redrive run` processes: see redrive.workers
        from redrive.workers import run_workers

        return run_workers(args)
    with importing_for_run(args.app):  # an unguarded app.run() in the module is refused
        app = _load_app(args.app)
    if not isinstance(app, App):
        raise SystemExit(f"redrive run: {args.app} is a {type(app).__name__}, not a redrive App")
    if args.bootstrap_servers:  # the command line wins over the code and the environment
        app.bootstrap_servers = args.bootstrap_servers
    app.connect_timeout = args.give_up_after  # None: wait for the broker as long as it takes
    log_events(app.bus, commits=args.verbose)
    server = _serve_observe(app, args)
    try:
        app.run()
    except StopTimeout as exc:
        print(f"redrive: {exc}", file=sys.stderr)
        return _exit_now(2)
    finally:
        if server is not None:
            server.close()
    return _exit_now(0)


def _serve_observe(app: App, args: argparse.Namespace) -> Server | None:
    """With ``--metrics-port``: metrics and probes attached to `app`, served over HTTP
    (worker i of ``--workers`` on the port + i)."""
    if args.metrics_port is None:
        return None
    from redrive.observe import Metrics, Probes, serve

    port = args.metrics_port
    if port and os.environ.get("REDRIVE_WORKER", "").isdigit():
        port += int(os.environ["REDRIVE_WORKER"])
    server = serve(port, host=args.metrics_host, metrics=Metrics().attach(app),
                   probes=Probes().attach(app))  # fmt: skip
    logging.getLogger("redrive.cli").info(
        "serving /metrics, /livez and /readyz on http://%s:%d", args.metrics_host, server.port
    )
    return server


def _exit_now(code: int) -> int:
    """`code`, or, when the App left threads behind (a handler that never returned: its
    record was abandoned at the stop), exit with it at once: they must not keep the process
    alive."""
    import os
    import threading

    left = [t.name for t in threading.enumerate()
            if t.is_alive() and not t.daemon and t is not threading.current_thread()]  # fmt: skip
    if not left:
        return code
    logging.getLogger("redrive.cli").warning(
        "exiting without waiting for threads still running: %s", ", ".join(left)
    )
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def cmd_broker(args: argparse.Namespace) -> int:
    from redrive.broker import broker_down, broker_status, broker_up

    if args.action == "up":
        status = broker_up(args.port)
        print(status.bootstrap_servers)
        print(f"log: {status.log}", file=sys.stderr)
    elif args.action == "down":
        print("stopped" if broker_down() else "no local broker was running")
    else:
        status = broker_status()
        if status.running:
            print(f"running at {status.bootstrap_servers} (pid {status.pid}, log {status.log})")
        else:
            print("not running")
            return 3
    return 0


def cmd_lab(args: argparse.Namespace) -> int:
    from redrive.lab.cli import run_lab

    return run_lab(args)


def cmd_chaos(args: argparse.Namespace) -> int:
    from redrive.chaos.cli import run_chaos

    return run_chaos(args)


def cmd_bench(args: argparse.Namespace) -> int:
    from redrive.bench.cli import run_bench

    return run_bench(args)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="redrive", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run",
        help="run an App: redrive run package.module:app",
        description="Run an App until SIGTERM or SIGINT (graceful stop, exit 0; a second "
        "signal exits at once with 128 + its number: 130, 143).",
    )
    run.add_argument("app", help="package.module:attribute of a redrive App")
    run.add_argument(
        "--bootstrap-servers",
        metavar="HOST:PORT",
        help="Kafka's address; wins over the code's App(bootstrap_servers=...), which wins "
        "over REDRIVE_BOOTSTRAP_SERVERS (default 127.0.0.1:9092)",
    )
    run.add_argument(
        "--give-up-after",
        type=_seconds,
        metavar="SECONDS",
        help="exit (code 2) when no broker answered within SECONDS at start-up "
        "(default: keep trying, logging every 10 s)",
    )
    run.add_argument(
        "--log-level",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="default INFO (DEBUG with -v)",
    )
    run.add_argument("--log-format", choices=["text", "json"], default=argparse.SUPPRESS,
                     help="text lines, or one JSON object per line (default text, or "
                     "REDRIVE_LOG_FORMAT)")  # fmt: skip
    run.add_argument(
        "--workers",
        type=_count,
        default=1,
        metavar="N",
        help="run N processes of the App in its consumer group under a supervisor that "
        "forwards signals and restarts crashed ones (default 1: this process)",
    )
    run.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics on /metrics and the health probes /livez and /readyz "
        "on PORT (0: a free one, logged; with --workers N, worker i uses PORT + i)",
    )
    run.add_argument("--metrics-host", default="0.0.0.0", metavar="HOST",
                     help="address the metrics server listens on (default 0.0.0.0)")  # fmt: skip
    run.set_defaults(func=cmd_run)

    broker = sub.add_parser("broker", help="the local Apache Kafka broker (up, down, status)")
    broker.add_argument("action", choices=["up", "down", "status"])
    broker.add_argument("--port", type=int, default=9092, help="listener port (default 9092)")
    broker.set_defaults(func=cmd_broker)

    lab = sub.add_parser("lab", help="run failure scenarios against a real broker and draw them")
    lab.add_argument("scenarios", nargs="*", help="scenario names (default: all)")
    lab.add_argument("--report", default="redrive-report.html", help="HTML report path")
    lab.add_argument("--json", action="store_true", help="print events and verdicts as JSON")
    lab.add_argument("--list", action="store_true", help="list the scenarios and exit")
    lab.add_argument("--open", action="store_true", help="open the report in a web browser")
    lab.set_defaults(func=cmd_lab)

    chaos = sub.add_parser(
        "chaos",
        help="prove nothing is lost under killed consumers and a restarted broker",
        description="Produce records, consume them with redrive run processes while they are "
        "SIGKILLed and the broker is restarted, and check with an independent ledger that "
        "nothing was lost and every duplicate is explained by a fault.",
    )
    from redrive.chaos.cli import add_arguments as add_chaos

    add_chaos(chaos)
    chaos.set_defaults(func=cmd_chaos)

    from redrive.dlt.cli import add_parser as add_dlt

    add_dlt(sub)
    bench = sub.add_parser("bench", help="throughput against the raw client and the peers")
    from redrive.bench.cli import add_arguments

    add_arguments(bench)
    bench.set_defaults(func=cmd_bench)

    from redrive.commands import add_parsers as add_chores

    add_chores(sub)
    parser.add_argument("--version", action="version", version=_version())
    _global_options(parser, None)
    parser.set_defaults(log_format=os.environ.get("REDRIVE_LOG_FORMAT", "text"))
    _everywhere(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from redrive.observe.logs import configure

    try:
        args = build_parser().parse_args(argv)
        configure("DEBUG" if args.verbose else "INFO", args.log_format)
        logging.getLogger("redrive.cli").debug("%s", _version())  # for bug reports: -v
        code = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows here rather than at exit
        return code
    except RedriveError as exc:
        print(f"redrive: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return _reader_gone()


def _reader_gone() -> int:
    """The reader of stdout went away (`redrive dlt ls --json | head -1`): exit quietly
    with the status of a process ended by SIGPIPE, as `cat` would."""
    try:
        # Python flushes stdout once more at exit, which would fail and print again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass  # stdout is no file (a test's capture): nothing left to flush
    return 141


def _version() -> str:
    from importlib.metadata import version

    import confluent_kafka

    return (
        f"redrive {version('redrive')} (confluent-kafka {version('confluent-kafka')}, "
        f"librdkafka {confluent_kafka.libversion()[0]})"
    )


def _global_options(parser: argparse.ArgumentParser, default: object) -> None:
    if "--verbose" not in parser._option_string_actions:
        parser.add_argument(
            "-v", "--verbose", action="store_true", default=default,
            help="more log output (DEBUG), before or after the sub-command",
        )  # fmt: skip
    if "--log-format" not in parser._option_string_actions:
        parser.add_argument(
            "--log-format", choices=["text", "json"], default=default,
            help="log lines as text (default) or one JSON object per line",
        )  # fmt: skip


def _everywhere(parser: argparse.ArgumentParser) -> None:
    """The global options on every sub-command too, so `redrive dlt ls -v` works. A
    sub-command's copy defaults to SUPPRESS: it sets the value only when given there."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _global_options(child, argparse.SUPPRESS)
                _everywhere(child)


if __name__ == "__main__":
    raise SystemExit(main())
