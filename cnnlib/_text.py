"""Printed text within the book's column: 676 px of code output, 8.8 px a character.

Used by every chapter's printed output (claims, checks, schedules, histories)."""
import textwrap

COLUMN = 76  # characters


def wrap(text, width=COLUMN, indent="  "):
    """Each line of `text` wrapped to `width` characters; continuation lines indented."""
    return "\n".join(textwrap.fill(line, width, subsequent_indent=indent, break_on_hyphens=False)
                     if len(line) > width else line for line in str(text).split("\n"))
