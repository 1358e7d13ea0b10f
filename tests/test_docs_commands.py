"""Every ``forcefield-et`` command in the README's and the docs' shell blocks parses with today's
command line: a renamed or removed option fails here, not in a user's terminal."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from forcefield_et.cli import build_parser

REPO_ROOT = Path(__file__).resolve().parents[1]
PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
SHELL_BLOCK = re.compile(r"```(?:bash|sh|shell|console)\n(.*?)```", flags=re.S)


def documented_commands() -> list[tuple[str, str]]:
    """(page, command) for each forcefield-et command line of the pages' shell blocks."""
    commands = []
    for page in PAGES:
        for block in SHELL_BLOCK.findall(page.read_text()):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.strip().removeprefix("$ ")
                if line.startswith("forcefield-et "):
                    commands.append((page.name, line))
    return commands


COMMANDS = documented_commands()


def test_the_docs_show_commands_of_every_kind():
    used = {shlex.split(command, comments=True)[1] for _, command in COMMANDS}
    assert {"pretrain", "finetune", "corpus", "evaluate", "md", "export", "info"} <= used


@pytest.mark.parametrize("page, command", COMMANDS, ids=[f"{p}:{c[:60]}" for p, c in COMMANDS])
def test_documented_command_parses(page, command, capsys):
    argv = shlex.split(command, comments=True)[1:]
    if "--help" in argv or "-h" in argv:
        pytest.skip("prints help")
    try:
        build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"{page}: {command}\n{capsys.readouterr().err}")
