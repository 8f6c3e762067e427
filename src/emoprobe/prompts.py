"""Where the text sits in a prompt template (a literal one, see config.resolve_template)."""

from __future__ import annotations


def template_parts(template: str) -> tuple[str, str]:
    """(what a literal template puts before the text, what it puts after it)."""
    before, after = template.format(text="\x00").split("\x00")
    return before, after
