"""The README's result tables are a fresh run's (slow: real runs on the tiny model). The README marks each
table it checks with the command that made it,

    <!-- checked by tests/test_readme.py: `pidistill run star-try-again --smoke --run-id sta-smoke` -->

and this test runs that command in a fresh PIDISTILL_HOME and compares the table it prints with the README's,
line for line. Only the code version in the lineage line may differ (this checkout's commit). A machine
whose numbers differ from the README's is a machine on which a run is not reproducible: the tiny model's
weights and a round's attempts are meant to be identical on any x86-64 CPU (models/numerics.py)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
MARK = re.compile(r"<!-- checked by tests/test_readme\.py: `pidistill ([^`]+)` -->\s*```\n(.*?)```", re.S)
CODE = re.compile(r"(  code )\S+")


def checked_tables() -> list[tuple[str, str]]:
    return MARK.findall(README.read_text())


def _table(printed: str) -> list[str]:
    """The result table in a run's output: from its header to its lineage line, the code version masked."""
    lines = printed.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("arm "))
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("run "))
    return [CODE.sub(r"\1*", line.rstrip()) for line in lines[start : end + 1]]


def test_the_readme_marks_its_checked_tables():
    commands = [c for c, _ in checked_tables()]
    assert any(c.startswith("run star-try-again --smoke") for c in commands)
    assert any(c.startswith("demo --set seeds=[0]") for c in commands)
    for command, table in checked_tables():
        assert "--run-id" in command, f"{command}: a fixed --run-id, or the lineage line cannot match"
        assert _table(table), command


@pytest.mark.slow
@pytest.mark.parametrize("command", [c for c, _ in checked_tables()])
def test_a_readme_table_matches_a_fresh_run(command, tiny_model, pidistill_home, capsys):
    from cli.main import main

    expected = _table(dict(checked_tables())[command])
    assert main(shlex.split(command)) == 0
    assert _table(capsys.readouterr().out) == expected
