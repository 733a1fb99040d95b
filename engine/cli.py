"""The `trading-engine` command: one argparse tree. Each part adds its own subcommand's
arguments (engine.server.add_arguments, engine.journal_tool.add_arguments, engine.admin._parser,
engine.analytics.add_arguments, engine.surveillance.add_arguments, engine.shards.add_arguments,
clients.cli.add_commands) and a
`run(args) -> exit code`.

Exit codes: 0 done; 1 refused or failed (a reject, a connection refused or lost, a port in use, a
journal it cannot open); 2 usage or config errors; 130 interrupted. Every expected failure is
one line on stderr, never a traceback.
"""
from __future__ import annotations

import argparse
import difflib
import os
import sys
from importlib import metadata


def _version() -> str:
    try:
        return metadata.version("trading-engine")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    """The whole `trading-engine` tree."""
    return _tree()[0]


def _tree() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    from clients import cli as clientcli          # here, not at the top: a Ctrl-C during these imports
    from engine import admin, journal_tool, server  # is main()'s to report
    from engine import surveillance
    p = argparse.ArgumentParser(prog="trading-engine", description="The trading engine, its tools and its clients.",
                                epilog="`trading-engine COMMAND -h` for a command's options.")
    p.add_argument("--version", action="version", version=f"trading-engine {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    server.add_arguments(sub.add_parser("serve", help="run the engine server", description="Run the engine server."))
    journal_tool.add_arguments(sub.add_parser(
        "journal", help="journal stats|verify|dump|audit|replay PATH ...", description=journal_tool.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter))
    admin._parser(sub.add_parser(
        "admin", help="operators: status, halt, deposit, set_limit, kill, mark, add_account, ... (admin -h)",
        description=admin.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    from engine import analytics
    analytics.add_arguments(sub.add_parser(
        "risk", help="risk analytics: risk var|stress|metrics|report|worker JOURNAL_PATH ... (VaR, ES, stress, "
                     "the VaR limit's worker)",
        description=analytics.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    from engine import reports
    reports.add_arguments(sub.add_parser(
        "report", help="compliance reports: report positions|audit|tca JOURNAL_PATH --config FILE",
        description=reports.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    surveillance.add_arguments(sub.add_parser(
        "surveil", help="market-abuse alerts from the journal: surveil JOURNAL_PATH|alerts --store DIR ...",
        description=surveillance.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    from engine.routing import server as routing
    routing.add_arguments(sub.add_parser(
        "route", help="the smart order router: route --config router.toml [status]", description=routing.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter))
    from engine import shards
    shards.add_arguments(sub.add_parser(
        "shards", help="symbol shards: shards coordinate|status --directory FILE (cash between shards)",
        description=shards.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    clientcli.add_commands(sub)
    return p, sub.choices


def _fail(message: str, code: int) -> int:
    print(f"trading-engine: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        from clients.cli import UsageError
        from clients.client import TradingEngineError
        p, commands = _tree()
        if argv and not argv[0].startswith("-") and argv[0] not in commands:
            near = difflib.get_close_matches(argv[0], list(commands), n=1)
            p.print_usage(sys.stderr)
            return _fail(f"unknown command {argv[0]!r}" + (f": did you mean {near[0]!r}?" if near else
                                                          f" (commands: {', '.join(commands)})"), 2)
        args = p.parse_args(argv)
        code = int(args.run(args) or 0)
        sys.stdout.flush()           # here, where a closed pipe is caught, not at interpreter exit
        return code
    except KeyboardInterrupt:        # first: the names below may not be imported yet
        return _fail("interrupted", 130)
    except UsageError as e:
        return _fail(str(e), 2)
    except BrokenPipeError:          # `... | head`: the reader went away; nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (TradingEngineError, ValueError) as e:
        return _fail(str(e), 1)
    except OSError as e:             # a connection refused, a file it cannot read
        return _fail(str(e), 1)
    except EOFError:                 # a prompt (a password) found no input
        return _fail("no input for the prompt (stdin is closed)", 1)


if __name__ == "__main__":
    raise SystemExit(main())
