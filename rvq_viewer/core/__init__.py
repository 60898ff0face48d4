"""The quantizer math: EnCodec / GPT-SoVITS codebooks, their residual stack, and loaded quantizers."""

from .codebook import DeadCodeEvent, EuclideanCodebook
from .quantizer import DeadCodeRule, LayerStep, Quantizer
from .search import nearest_codes
from .vq import ResidualVectorQuantization, RVQOutput, VectorQuantization

__all__ = ["DeadCodeEvent", "DeadCodeRule", "EuclideanCodebook", "LayerStep", "Quantizer",
           "ResidualVectorQuantization", "RVQOutput", "VectorQuantization", "nearest_codes"]
