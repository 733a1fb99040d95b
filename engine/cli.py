"""The `trading-engine` command."""
from __future__ import annotations

import sys


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    commands = {
        "serve": ("engine.server", "run the engine server"),
        "journal": ("engine.journal_tool", "journal stats|verify|dump|audit|replay PATH ..."),
        "admin": ("engine.admin", "operators: status, halt, deposit, set_limit, kill, mark, add_account, ... "
                                  "(admin -h)"),
        "order": ("clients.cli", "place an order"),
        "cancel": ("clients.cli", "cancel an order"),
        "book": ("clients.cli", "show a book"),
        "orders": ("clients.cli", "list open orders"),
        "symbols": ("clients.cli", "list symbols"),
        "positions": ("clients.cli", "the account's positions and P&L"),
        "portfolio": ("clients.cli", "the account's cash, equity, margin and state"),
        "trades": ("clients.cli", "a symbol's recent trades"),
        "watch": ("clients.cli", "print a symbol's market data as it comes"),
    }
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        print("usage: trading-engine COMMAND [options]\n\ncommands:")
        for name, (_, text) in commands.items():
            print(f"  {name:<10}{text}")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module = __import__(commands[argv[0]][0], fromlist=["main"])
    if commands[argv[0]][0] in ("engine.server", "engine.journal_tool", "engine.admin"):
        return module.main(argv[1:])
    return module.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
