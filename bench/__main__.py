"""Meterboard's benchmarks: `python -m bench <command> [options]`; `python -m bench <command> --help`.

  ingest     ingestion throughput over HTTP (gunicorn, 2 workers), with the raw COPY ceiling
  close      the month-end close of 10,000 workspaces and 5 million events, with the floor
  allowance  the allowance endpoint's latency and the event-to-alert delay (a real worker)
  overview   the dashboard overview's server time at 20 thousand and 2 million events
  all        the four in that order, each in a process of its own (`make bench`)
  scale      ingestion, overview and close with 20 million events over 6 months, beside an empty
             database (`make bench-scale`; not part of `all`: its load alone takes minutes)

`all` takes ingestion's and the close's options itself (the close's are named --close-*; the
Makefile's BENCH_ARGS), --close-only to skip ingestion, and the others' options as one string
each: --allowance-args='...' (ALLOWANCE_ARGS), --overview-args='...' (OVERVIEW_ARGS). Like the
Makefile's three commands before it, it stops after ingestion and the close when either failed.

Every benchmark runs on bench/environment.py's database: DATABASE_URL, else `meterboard_bench` on
the local PostgreSQL (created when missing), else a SQLite file under var/bench/.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import subprocess
import sys

from . import allowance, close, ingest, overview, scale
from .environment import BASE_DIR

COMMANDS = {"ingest": ingest, "close": close, "allowance": allowance, "overview": overview, "scale": scale}


def parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top parser and each command's."""
    top = argparse.ArgumentParser(
        prog="python -m bench",
        description="Meterboard's benchmarks (make bench runs `all`).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[2:]),
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="command")
    sub = {}
    for name, module in COMMANDS.items():
        sub[name] = commands.add_parser(name, help=module.HELP, epilog=module.EPILOG,
                                        description=f"{module.HELP[0].upper()}{module.HELP[1:]}.")  # fmt: skip
        module.add_arguments(sub[name])
    sub["all"] = every = commands.add_parser(
        "all", help="ingest, close, allowance and overview, in that order (make bench)",
        description="The four benchmarks in order, each in a process of its own, with their defaults.",
    )  # fmt: skip
    ingest.add_arguments(every)
    close.add_arguments(every, fresh_db=False)
    every.add_argument("--close-only", action="store_true", help="skip ingestion (the close, allowance, overview)")
    every.add_argument("--allowance-args", default="", metavar="'OPTIONS'",
                       help="options of `allowance`, one string (ALLOWANCE_ARGS)")
    every.add_argument("--overview-args", default="", metavar="'OPTIONS'",
                       help="options of `overview`, one string (OVERVIEW_ARGS)")
    every.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")  # fmt: skip
    return top, sub


def options(parser: argparse.ArgumentParser, args: argparse.Namespace, *, skip: tuple[str, ...] = ()) -> list[str]:
    """The command line that gives `parser` the values `args` holds (the options left at their
    default are left out)."""
    argv = []
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help", *skip):
            continue
        value = getattr(args, action.dest, action.default)
        if value == action.default:
            continue
        flag = max(action.option_strings, key=len)
        argv += [flag] if isinstance(value, bool) else [flag, str(value)]
    return argv


def plan(args: argparse.Namespace, sub: dict[str, argparse.ArgumentParser]) -> list[list[str]]:
    """The commands `all` runs: [name, *options] each."""
    for name, text in (("allowance", args.allowance_args), ("overview", args.overview_args)):
        checked = sub[name].parse_args(shlex.split(text))  # errors now, not after an hour of ingestion
        COMMANDS[name].check(sub[name], checked)
    fresh = ["--fresh-db"] if args.fresh_db else []  # only the first command drops the database
    steps = []
    if not args.close_only:
        steps.append(["ingest", *options(sub["ingest"], args, skip=("fresh_db",)), *fresh])
        fresh = []
    steps.append(["close", *options(sub["close"], args, skip=("fresh_db",)), *fresh])
    steps.append(["allowance", *shlex.split(args.allowance_args)])
    steps.append(["overview", *shlex.split(args.overview_args)])
    return steps


class Child:
    """One command in a process of its own. A Ctrl-C in the terminal reaches it as well as `all`;
    a SIGTERM sent to `all` is passed on. Either way `all` waits for it to clean up, then stops."""

    interrupted = False
    process: subprocess.Popen | None = None

    @classmethod
    def run(cls, command: list[str]) -> int:
        cls.process = subprocess.Popen([sys.executable, "-m", "bench", *command], cwd=BASE_DIR)
        try:
            return cls.process.wait()
        finally:
            cls.process = None

    @classmethod
    def on_signal(cls, signum, frame) -> None:
        cls.interrupted = True
        if signum == signal.SIGTERM and cls.process is not None:
            cls.process.send_signal(signal.SIGTERM)


def run_all(args: argparse.Namespace, sub: dict[str, argparse.ArgumentParser]) -> int:
    steps = plan(args, sub)
    if args.dry_run:
        for command in steps:
            print(shlex.join([sys.executable, "-m", "bench", *command]))
        return 0
    signal.signal(signal.SIGINT, Child.on_signal)
    signal.signal(signal.SIGTERM, Child.on_signal)
    failed = 0
    for n, command in enumerate(steps):
        if n:
            print(flush=True)  # a blank line between the benchmarks' outputs
        code = Child.run(command)
        failed = failed or (128 - code if code < 0 else code)  # killed by a signal: 128 + its number
        if Child.interrupted:
            return failed or 130
        if failed and command[0] != "ingest":  # the close still runs after a failed ingestion
            return failed
    return failed


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    top, sub = parsers()
    args = top.parse_args(argv)
    if args.command == "all":
        close.check(sub["all"], args)
        ingest.check(sub["all"], args)
        if args.close_only and not args.close_workspaces:
            sub["all"].error("--close-only with --close-workspaces 0 runs nothing")
        return run_all(args, sub)
    COMMANDS[args.command].check(sub[args.command], args)
    # SIGTERM as Ctrl-C: every benchmark then stops its servers and cleans up before it exits.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored
    return COMMANDS[args.command].main(args)


if __name__ == "__main__":
    sys.exit(main())
