"""The `pidistill` console script: a plain `pidistill sql ...` runs without loading the rest of the CLI
(see cli.sql); every other command line goes to cli.main."""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["sql"]:
        from cli.sql import parse, run

        plain = parse(args[1:])
        if plain is not None:
            try:
                return run(*plain)
            except BrokenPipeError:  # `pidistill sql ... | head`: the reader left, which is not an error
                sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - so the interpreter's final flush stays quiet
                return 0
    from cli.main import main as full

    return full(argv)


if __name__ == "__main__":
    sys.exit(main())
