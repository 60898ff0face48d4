"""Loaders: checkpoints of real projects into `Quantizer`s, feature files into streamed chunks."""

from .checkpoints import detect_format, load_quantizer, read_checkpoint
from .features import Chunk, FeatureSource, list_feature_files
from .save import atomic_path, atomic_write_text, save_checkpoint

__all__ = ["Chunk", "FeatureSource", "atomic_path", "atomic_write_text", "detect_format",
           "list_feature_files", "load_quantizer", "read_checkpoint", "save_checkpoint"]
