"""Checkpoint families, tried in order: the first whose `detect` accepts the keys builds the quantizer."""

from .base import Checkpoint, Format, unwrap
from .encodec import ENCODEC
from .gpt_sovits import GPT_SOVITS
from .plain import PLAIN

# Most specific first: GPT-SoVITS is an EnCodec-layout RVQ with an ssl_proj beside it.
FORMATS: list[Format] = [GPT_SOVITS, ENCODEC, PLAIN]

__all__ = ["Checkpoint", "FORMATS", "Format", "unwrap"]
