"""Text in the report: HTML-escaped, and always encodable as UTF-8.

File names that are not valid UTF-8 reach Python as lone surrogates (os.fsdecode's surrogateescape:
byte 0xff becomes U+DCFF), which no UTF-8 file can hold. They are shown as the bytes they stand for,
`\\xff`, as Python's own repr shows them; any other lone surrogate as `\\udxxx`.
"""

from __future__ import annotations

import html
import re

_SURROGATE = re.compile("[\ud800-\udfff]")


def _shown(match: re.Match) -> str:
    code = ord(match[0])
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def printable(text: str) -> str:
    """`text` with every lone surrogate written as an escape (a name's undecodable bytes as \\xNN)."""
    return _SURROGATE.sub(_shown, text)


def escape(text) -> str:
    """`html.escape` of `str(text)`, printable (see `printable`)."""
    return html.escape(printable(str(text)))
