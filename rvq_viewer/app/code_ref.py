"""What a user types to go to a code: `256` (in the selected layer) or `3:256` (layer 3, code 256)."""

from __future__ import annotations

import re

_REF = re.compile(r"^\s*(?:(?:l(?:ayer)?\s*)?(\d+)\s*[:/,\s]\s*)?(?:c(?:ode)?\s*)?(\d+)\s*$", re.IGNORECASE)


def parse_code_ref(text: str, layer: int, sizes: list[int]) -> tuple[int, int]:
    """(layer, code) for `text`, given the selected layer and each layer's codebook size.

    Raises ValueError with a sentence for the user: what was wrong with the text, or which range the
    layer or code must be in."""
    match = _REF.match(text)
    if not match:
        raise ValueError(f"{text.strip()!r}: type a code (256) or layer:code (3:256)")
    if match.group(1) is not None:
        layer = int(match.group(1))
    code = int(match.group(2))
    if not sizes:
        raise ValueError("no checkpoint open")
    if not 0 <= layer < len(sizes):
        raise ValueError(f"layer {layer}: this quantizer has layers 0-{len(sizes) - 1}")
    if not 0 <= code < sizes[layer]:
        raise ValueError(f"code {code}: layer {layer} has codes 0-{sizes[layer] - 1:,}")
    return layer, code
