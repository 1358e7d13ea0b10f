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
SHELL_LANGUAGES = {"", "bash", "sh", "shell", "console", "text"}


def shell_blocks(text: str) -> list[str]:
    """The bodies of the fenced code blocks of a Markdown page whose language is a shell's (or none)."""
    blocks, language, body = [], None, []
    for line in text.splitlines():
        fence = re.match(r"^\s*```(\w*)\s*$", line)
        if fence and language is None:
            language, body = fence.group(1), []
        elif fence:
            if language in SHELL_LANGUAGES:
                blocks.append("\n".join(body) + "\n")
            language = None
        elif language is not None:
            body.append(line)
    return blocks


def documented_commands() -> list[tuple[str, str]]:
    """(page, command) for each forcefield-et command line of the pages' shell blocks."""
    commands = []
    for page in PAGES:
        for block in shell_blocks(page.read_text()):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.strip().removeprefix("$ ")
                if line.startswith("forcefield-et ") and not re.match(r"forcefield-et [\w-]+:", line):  # not output
                    commands.append((page.name, line))
    return commands


COMMANDS = documented_commands()


def test_shell_blocks_pairs_fences_of_every_language():
    page = "```python\nx = 1\n```\ntext\n```bash\nforcefield-et info\n```\n```\nforcefield-et md a.xyz\n```\n"
    assert shell_blocks(page) == ["forcefield-et info\n", "forcefield-et md a.xyz\n"]


def test_the_docs_show_commands_of_every_kind():
    used = {shlex.split(command, comments=True)[1] for _, command in COMMANDS}
    assert {"pretrain", "finetune", "corpus", "evaluate", "md", "export", "info"} <= used


@pytest.mark.parametrize("page, command", COMMANDS, ids=[f"{p}:{c[:60]}" for p, c in COMMANDS])
def test_documented_command_parses(page, command, capsys):
    argv = shlex.split(command, comments=True)[1:]
    if "--help" in argv or "-h" in argv or argv == ["--version"]:
        pytest.skip("prints help or the version")
    try:
        build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"{page}: {command}\n{capsys.readouterr().err}")


def documented_benchmark_commands() -> list[tuple[str, str]]:
    """(page, command) for each ``python -m benchmarks.<name>`` command in the pages, in code
    blocks or inline code."""
    commands = []
    for page in PAGES:
        text = page.read_text().replace("\\\n", " ")
        for match in re.finditer(r"python -m (benchmarks\.\w+)([^`\n]*)", text):
            commands.append((page.name, match.group(0).strip()))
    return sorted(set(commands))


BENCHMARK_COMMANDS = documented_benchmark_commands()


@pytest.mark.parametrize("page, command", BENCHMARK_COMMANDS, ids=[f"{p}:{c[10:70]}" for p, c in BENCHMARK_COMMANDS])
def test_documented_benchmark_command_names_a_module_and_its_options(page, command):
    words = shlex.split(command, comments=True)
    module = REPO_ROOT / (words[2].replace(".", "/") + ".py")
    assert module.is_file(), f"{page}: {command}: no module {module.relative_to(REPO_ROOT)}"
    source = module.read_text()
    unknown = [w.split("=")[0] for w in words[3:] if w.startswith("--") and f'"{w.split("=")[0]}"' not in source]
    assert not unknown, f"{page}: {command}: {module.name} has no option {unknown}"
