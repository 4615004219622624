"""The command-line reference, generated from ``phaseforge.cli``'s own argparse parser.

Every sub-command (recursively: ``export slm``, ``capture pack`` …) gets a section with its usage
line, its help and a table of every option: the flags, the help text (``%(default)s`` expanded),
the default and the choices. The configuration keys come from ``phaseforge config`` (the resolved
defaults), so neither page can drift from the code.
"""
from __future__ import annotations

import argparse
import io
from contextlib import redirect_stdout

__all__ = ["cli_markdown", "config_markdown", "walk_parsers"]


def _cell(text) -> str:
    """Text for one markdown table cell: no newlines, pipes escaped, `*` left to MyST as text."""
    s = " ".join(str(text).split())
    return s.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _code(text) -> str:
    s = str(text)
    return f"`` {s} ``" if "`" in s else f"`{s}`"


def walk_parsers(parser: argparse.ArgumentParser, prefix=("phaseforge",)):
    """Yield ``(words, parser, help)`` for the parser and every sub-parser, depth first, in the order
    argparse lists them."""
    yield prefix, parser, parser.description or ""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                for words, p, h in walk_parsers(sub, prefix + (name,)):
                    yield words, p, (h or helps.get(name) or "") if words == prefix + (name,) else h


def _default(action) -> str:
    d = action.default
    if action.required or d is None or d is argparse.SUPPRESS:
        return "required" if action.required else ""
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        return ""
    if isinstance(d, (list, tuple)):
        return _code(" ".join(str(v) for v in d)) if d else "none"
    return _code(d)


def _option_rows(parser: argparse.ArgumentParser):
    fmt = parser._get_formatter()
    rows = []
    for a in parser._actions:
        if isinstance(a, (argparse._SubParsersAction, argparse._HelpAction)) or a.help is argparse.SUPPRESS:
            continue
        if a.option_strings:
            flags = ", ".join(a.option_strings)
            if a.nargs != 0:
                flags += " " + fmt._format_args(a, fmt._get_default_metavar_for_optional(a))
        else:
            flags = fmt._format_args(a, fmt._get_default_metavar_for_positional(a))
        help_text = fmt._expand_help(a) if a.help else ""
        choices = ", ".join(_code(c) for c in a.choices) if a.choices is not None else ""
        rows.append((_code(flags), _cell(help_text), _default(a), choices))
    return rows


def cli_markdown(parser: argparse.ArgumentParser) -> str:
    """The whole CLI as markdown: one H2 per sub-command path (``phaseforge export slm``)."""
    out = []
    for words, p, help_text in walk_parsers(parser):
        has_sub = any(isinstance(a, argparse._SubParsersAction) for a in p._actions)
        title = " ".join(words)
        out.append(f"## {title}\n")
        if help_text:
            out.append(f"{_cell(help_text)}\n")
        out.append("```text\n" + p.format_usage().strip() + "\n```\n")
        rows = _option_rows(p)
        if rows:
            out.append("| option | meaning | default | choices |\n|---|---|---|---|")
            out.extend(f"| {f} | {h} | {d} | {c} |" for f, h, d, c in rows)
            out.append("")
        if has_sub:
            subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)][0]
            out.append("Sub-commands: " + ", ".join(f"[{title} {n}](#{'-'.join((title + ' ' + n).split())})"
                                                   for n in subs.choices) + ".\n")
    return "\n".join(out)


def config_markdown() -> str:
    """Every configuration key with its default: the output of ``phaseforge config``."""
    from phaseforge.cli import main
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = main(["config"])
    if rc != 0:
        raise RuntimeError(f"phaseforge config exited with {rc}")
    return "```yaml\n" + buf.getvalue().rstrip() + "\n```\n"
