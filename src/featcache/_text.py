"""Text from a store (file names, class names, reasons) made safe to show and to write.

A store is untrusted input, and so are the names in it: a file named
``=HYPERLINK("http://x")`` becomes a formula when a CSV we write is opened in a spreadsheet,
and a name holding ``ESC [ ... m`` or ``ESC ] ... BEL`` rewrites what a terminal shows (colours,
the title, a hidden line). `printable` shows control characters as escapes; `csv_cell`
neutralises a cell a spreadsheet would evaluate, as OWASP recommends (a leading ``'``).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["FORMULA_PREFIXES", "csv_cell", "printable"]

# C0 controls but newline and tab, DEL, and C1 controls (U+009B is a one-character CSI)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

#: What a spreadsheet reads as the start of a formula.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def printable(text: str) -> str:
    """`text` with every control character (ESC, NUL, BEL, CR, C1...) but newline and tab
    shown as a ``\\xNN`` escape, so printing it cannot drive the terminal."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def csv_cell(value: Any) -> Any:
    """A CSV cell that no spreadsheet evaluates: text starting with ``= + - @``, a tab or a
    carriage return gets a leading ``'``; other values are returned as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value
