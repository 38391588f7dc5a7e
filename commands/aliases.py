"""Old command names kept as aliases: the same command under another name, its help saying what it is an
alias of (`refreshq --help` lists it as one). The glossary's names are the commands; the reference design's
top-level verbs (`refreshq list`, `status`, `cancel`, `resume`, `cleanup`) and `refreshq failed` stay."""

from __future__ import annotations

import click

ALIAS_MARK = "Alias of"


def alias(command: click.Command, name: str, of: str) -> click.Command:
    """`command` (a command or a group) also named `name`; `of` is what it is an alias of, e.g. "refresh list"."""
    mark = f"{ALIAS_MARK} `refreshq {of}`."
    help_text = f"{mark}\n\n{command.help or ''}".strip()
    if isinstance(command, click.Group):
        return click.Group(name, commands=command.commands, callback=command.callback, params=command.params,
                           help=help_text, short_help=mark)
    return click.Command(name, callback=command.callback, params=command.params, help=help_text, short_help=mark)
