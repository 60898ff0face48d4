"""Loaders: checkpoints of real projects into `Quantizer`s, feature files into streamed chunks.

Families (`rvq_viewer.io.formats.FORMATS`, detected from the keys): GPT-SoVITS, EnCodec, audiocraft,
HF transformers EnCodec, SpeechTokenizer, WavTokenizer, vector-quantize-pytorch (VQ, heads, groups, FSQ,
LFQ and SimVQ families), DAC, SNAC, Moshi/Mimi (moshi and HF names), X-Codec2 / NeuCodec, S3Tokenizer v2,
Stable Codec presets, and plain codebook tensors.
"""

from .checkpoints import detect_format, load_quantizer, read_checkpoint
from .features import Chunk, FeatureSource, list_feature_files
from .outputs import atomic_path, atomic_write_text, check_outputs
from .save import save_checkpoint

__all__ = ["Chunk", "FeatureSource", "atomic_path", "atomic_write_text", "check_outputs", "detect_format",
           "list_feature_files", "load_quantizer", "read_checkpoint", "save_checkpoint"]
