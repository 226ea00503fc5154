"""Help that reads like a man page: ``--dry-run`` (a flag, no ``<bool>``), ``VERSION``.

typer (0.29) draws a flag's type (``<bool>``) beside it and a required argument as
``{version}``; :func:`tidy_help` walks a built command tree once and gives flags no
metavar and arguments their upper-case name.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperArgument, TyperGroup, TyperOption


class _NamedArgument(TyperArgument):
    """An argument shown as ``NAME`` (required) or ``[NAME]`` in the usage line."""

    def _usage_display_name(self) -> str:
        name = self.display_name_raw
        name = name if self.required else f"[{name}]"
        return name + ("..." if self.nargs != 1 else "")


def tidy_help(command: Any) -> Any:
    """``command`` with plain metavars on every parameter of it and its subcommands."""
    help_option = command.get_help_option(command.context_class(command))
    for param in [*command.params, *([help_option] if help_option is not None else [])]:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""
        elif isinstance(param, TyperArgument):
            if param.metavar is None and param.name:
                param.metavar = param.name.upper()
            param.__class__ = _NamedArgument
    if isinstance(command, TyperGroup):
        for sub in command.commands.values():
            tidy_help(sub)
    return command
