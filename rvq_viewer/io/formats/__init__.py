"""Checkpoint families, tried in order: the first whose `detect` accepts the keys builds the quantizer."""

from .base import Checkpoint, Format, unwrap
from .dac import DAC, SNAC
from .encodec import AUDIOCRAFT, ENCODEC, ENCODEC_HF, SPEECHTOKENIZER, WAVTOKENIZER, XCODEC
from .fsq import FSQ
from .fsq_codecs import S3TOKENIZER, STABLE_CODEC, XCODEC2
from .gpt_sovits import GPT_SOVITS
from .lfq import LFQ
from .mimi import MIMI
from .no_codebook import no_codebook_reason
from .plain import PLAIN
from .pretrained import read_pretrained
from .simvq import SIMVQ
from .vqpytorch import VQPYTORCH

# Most specific first: GPT-SoVITS, SpeechTokenizer, WavTokenizer and audiocraft are EnCodec-layout RVQs
# told apart by what sits beside the quantizer; SNAC is a DAC-layout quantizer with strides. A family's
# `partial` check runs in the same order, so a file with its marks but a part missing stops at its
# message before a more general family could read it another way. A Stable Codec preset named as levels
# settles the format first; FSQ's bare projections are the weakest sign, so last.
FORMATS: list[Format] = [STABLE_CODEC, MIMI, GPT_SOVITS, SPEECHTOKENIZER, WAVTOKENIZER, AUDIOCRAFT, ENCODEC,
                         ENCODEC_HF, XCODEC, VQPYTORCH, LFQ, SIMVQ, SNAC, DAC, XCODEC2, S3TOKENIZER, PLAIN, FSQ]

__all__ = ["Checkpoint", "FORMATS", "Format", "no_codebook_reason", "read_pretrained", "unwrap"]
