"""Safe display of server-provided strings outside the FileList.

Everything a server sends (paths, error messages, event fields, server names) may carry
terminal escapes.  These helpers run it through FileList's :func:`escape_name`, so a
control character is shown as a visible ``\\x1b``-style escape in the error style and never
reaches the terminal raw.  Line breaks in multi-line messages are kept as line breaks.
"""

from __future__ import annotations

from typing import Any

from rich.style import Style
from rich.text import Text

from jettui.tui.widgets.file_list import escape_name

__all__ = ["ESCAPED_STYLE", "safe", "safe_str"]

#: How escaped characters look in dialogs and tables (the FileList uses its own CSS class).
ESCAPED_STYLE = Style(bold=True, underline=True, color="red")


def safe(value: Any, style: Style | str = "", *, multiline: bool = False) -> Text:
    """A rich Text of ``value`` (any type: non-strings through ``str``/``repr``) with every
    non-printable character escaped; with ``multiline``, newlines stay line breaks."""
    if value is None:
        return Text("—", style=style)
    if not isinstance(value, str):
        value = str(value) if isinstance(value, int | float | bool) else repr(value)
    text = Text(style=style, end="")
    lines = value.split("\n") if multiline else [value]
    for i, line in enumerate(lines):
        if i:
            text.append("\n")
        if line == "":
            continue
        for chunk, escaped in escape_name(line, allow_slash=True):
            text.append(chunk, ESCAPED_STYLE if escaped else None)
    return text


def safe_str(value: Any) -> str:
    """Plain-string form of :func:`safe` (escapes inline), for places that take ``str`` only
    and do not parse markup (DataTable cells are given Text instead; this is for titles)."""
    return safe(value).plain
