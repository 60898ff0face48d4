"""Checkpoint families, tried in order: the first whose `detect` accepts the keys builds the quantizer."""

from .base import Checkpoint, Format, unwrap
from .dac import DAC, SNAC
from .encodec import AUDIOCRAFT, ENCODEC, ENCODEC_HF, SPEECHTOKENIZER, WAVTOKENIZER
from .gpt_sovits import GPT_SOVITS
from .mimi import MIMI
from .plain import PLAIN
from .vqpytorch import VQPYTORCH

# Most specific first: GPT-SoVITS, SpeechTokenizer, WavTokenizer and audiocraft are EnCodec-layout RVQs
# told apart by what sits beside the quantizer; SNAC is a DAC-layout quantizer with strides.
FORMATS: list[Format] = [MIMI, GPT_SOVITS, SPEECHTOKENIZER, WAVTOKENIZER, AUDIOCRAFT, ENCODEC, ENCODEC_HF,
                         VQPYTORCH, SNAC, DAC, PLAIN]

__all__ = ["Checkpoint", "FORMATS", "Format", "unwrap"]
