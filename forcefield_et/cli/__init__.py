"""Command-line interface: ``forcefield-et pretrain|finetune|corpus|evaluate|md|select|label|export|info``.

One module per group of subcommands (:mod:`.train`, :mod:`.data`, :mod:`.simulate`, :mod:`.models`), each
with an ``add_<command>_parser`` and a ``<command>_command``; :mod:`.common` holds what they share. Run
``forcefield-et COMMAND --help`` for each command's options and examples.
"""

from __future__ import annotations

import argparse
import sys
from types import ModuleType
from typing import Dict, List

import torch

from .. import __version__
from . import data, models, simulate, train
from .common import parse_duration
from .simulate import BROKEN_BOND_EXIT_STATUS, UNCERTAIN_EXIT_STATUS
from .train import finetune_config
from .validators import check_paths

EPILOG = """examples:
  forcefield-et pretrain --config configs/pretrain_cpu_small.yaml
  forcefield-et finetune --model pretrained --train train.xyz --n-train 500 --out my_model
  forcefield-et evaluate --model my_model/best.pt --data test.xyz --out eval
  forcefield-et md structure.xyz --model pretrained --temperature 300 --steps 2000 --out md
  forcefield-et export --model pretrained --out model.torchscript.pt
  forcefield-et export --model runs/pretrain_cpu_small/best.pt --format checkpoint \\
      --card configs/pretrained_card.yaml --out forcefield_et/checkpoints/pretrained.pt
  forcefield-et info pretrained
"""


# each subcommand, in the order --help lists them, and the module that parses and runs it
COMMANDS: Dict[str, ModuleType] = {
    "pretrain": train, "finetune": train, "corpus": data, "evaluate": models, "md": simulate, "select": data,
    "label": data, "export": models, "info": models,
}


def build_parser() -> argparse.ArgumentParser:
    """The ``forcefield-et`` parser with every subcommand of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="forcefield-et",
        description="Force-centric pre-trained Equivariant Transformer potentials (units: Å, eV).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__} (torch {torch.__version__})")
    sub = parser.add_subparsers(dest="command", required=True)
    for command, module in COMMANDS.items():
        getattr(module, f"add_{command}_parser")(sub)
    return parser


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    """The subparser of ``command`` in ``parser``."""
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return subparsers.choices[command]


def _show_domain_warnings_on_one_line(command: str) -> None:
    """DomainWarnings and DroppedFramesWarnings print as ``forcefield-et COMMAND: warning: ...``
    (other warnings unchanged)."""
    import warnings

    from ..data.errors import DroppedFramesWarning
    from ..domain import DomainWarning

    default = getattr(warnings.formatwarning, "wrapped", warnings.formatwarning)  # wrap once per process

    def format_warning(message, category, filename, lineno, line=None):  # noqa: ANN001, ANN202
        if issubclass(category, (DomainWarning, DroppedFramesWarning)):
            return f"forcefield-et {command}: warning: {message}\n"
        return default(message, category, filename, lineno, line)

    format_warning.wrapped = default  # type: ignore[attr-defined]
    warnings.formatwarning = format_warning


# commands that evaluate or train a model, and so opt in to runtime.keep_freed_memory
ALLOCATOR_COMMANDS = ("pretrain", "finetune", "evaluate", "md", "select")


def main(argv: List[str] | None = None) -> int:
    """Run ``forcefield-et`` with ``argv`` (the process's arguments when None); returns the exit status:
    0 on success, 2 for a bad input or a failure (one line on stderr), 3 and 4 for an MD run that
    stopped on a broken bond or on the committee's force spread, 130 when interrupted."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    problem = check_paths(_subparser(parser, args.command), args)
    if problem:
        print(f"forcefield-et {args.command}: error: {problem}", file=sys.stderr)
        return 2
    _show_domain_warnings_on_one_line(args.command)
    if args.command in ALLOCATOR_COMMANDS:
        from ..runtime import keep_freed_memory

        keep_freed_memory()  # the application opts in: large systems reuse freed memory (runtime.py)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; training runs resume from their last checkpoint", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError, ImportError, MemoryError, FloatingPointError) as error:
        print(f"forcefield-et {args.command}: error: {error}", file=sys.stderr)
        return 2


__all__ = ["BROKEN_BOND_EXIT_STATUS", "COMMANDS", "UNCERTAIN_EXIT_STATUS", "build_parser", "finetune_config", "main",
           "parse_duration"]
