"""Command-line help that reads well: docstrings without RST markup, and each option's default
shown where it has one worth showing."""

from __future__ import annotations

import argparse
import re


def plain(doc: str) -> str:
    """A docstring paragraph as help text: ``code`` and `code` lose their backticks."""
    return re.sub(r"`{1,2}([^`]+)`{1,2}", r"\1", " ".join(doc.split()))


class HelpFormatter(argparse.HelpFormatter):
    """Adds "(default: X)" to options whose default is a value (not None, False or empty) and
    whose help does not state it already."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        d = action.default
        if (action.option_strings and d not in (None, False, "", [], argparse.SUPPRESS)
                and "default" not in text):
            text += " (default: %(default)s)"
        return text
