"""Sphinx extension: ``{toosimpleq-command} NAME`` renders a management command's usage and options.

The text comes from the command's own argparse parser (built as ``manage.py NAME --help`` builds
it), so the reference changes whenever the code does. Django's common options (``--settings``,
``--verbosity``...) are left out: they are the same for every command and documented by Django.
"""

from __future__ import annotations

import argparse

from django.core.management import BaseCommand, load_command_class
from docutils import nodes
from sphinx.util.docutils import SphinxDirective

APP = "django_toosimple_q"


def _django_common_dests() -> set[str]:
    parser = BaseCommand().create_parser("manage.py", "command")
    return {action.dest for action in parser._actions}


def command_parser(name: str) -> argparse.ArgumentParser:
    """The parser ``manage.py NAME`` uses (a narrow, fixed width keeps the usage text stable)."""
    command = load_command_class(APP, name)
    parser = command.create_parser("manage.py", name)
    parser.formatter_class = lambda prog: argparse.HelpFormatter(prog, width=100)
    return parser


def own_options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The options the command adds, in the order it adds them."""
    common = _django_common_dests()
    return [action for action in parser._actions if action.dest not in common]


def option_signature(action: argparse.Action) -> str:
    """``--queue QUEUE``, ``--reload {always,never}``, ``--once``."""
    formatter = argparse.HelpFormatter("manage.py")
    return formatter._format_action_invocation(action)


def option_help(action: argparse.Action) -> str:
    """The help text with ``%(default)s`` and friends filled in, as ``--help`` prints it."""
    formatter = argparse.HelpFormatter("manage.py")
    return formatter._expand_help(action) if action.help else ""


def exclusive_groups(parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    """For each option of a mutually exclusive group, the options it excludes."""
    excluded: dict[str, list[str]] = {}
    for group in parser._mutually_exclusive_groups:
        names = [action.option_strings[0] for action in group._group_actions]
        for name in names:
            excluded[name] = [other for other in names if other != name]
    return excluded


def usage(name: str) -> str:
    parser = command_parser(name)
    own = {action.dest for action in own_options(parser)}
    # The usage line lists Django's common options too; keep only the command's own.
    hidden = [action for action in parser._actions if action.dest not in own]
    for action in hidden:
        action.help = argparse.SUPPRESS
    text = parser.format_usage().strip()
    return text.removeprefix("usage: ")


class CommandDirective(SphinxDirective):
    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        name = self.arguments[0]
        parser = command_parser(name)
        command = load_command_class(APP, name)
        result: list[nodes.Node] = []
        if command.help:
            result.append(nodes.paragraph(text=command.help))
        result.append(nodes.literal_block(text=usage(name), language="text"))
        excluded = exclusive_groups(parser)
        items = nodes.definition_list()
        for action in own_options(parser):
            help_text = option_help(action)
            first = action.option_strings[0] if action.option_strings else action.dest
            if excluded.get(first):
                help_text += f" (cannot be combined with {', '.join(excluded[first])})"
            term = nodes.term("", "", nodes.literal(text=option_signature(action)))
            definition = nodes.definition("", nodes.paragraph(text=help_text))
            items.append(nodes.definition_list_item("", term, definition))
        result.append(items)
        return result


def setup(app):
    app.add_directive("toosimpleq-command", CommandDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
