"""The quantizer math: EnCodec / GPT-SoVITS codebooks, their residual stack, loaded quantizers, and the
one nearest-neighbour search everything else uses. Torch only: nothing here reads files."""

from .codebook import DeadCodeEvent, EuclideanCodebook
from .neighbours import nearest_neighbours
from .quantizer import DeadCodeRule, LayerStep, Quantizer
from .search import nearest_codes
from .vq import ResidualVectorQuantization, RVQOutput, VectorQuantization

__all__ = ["DeadCodeEvent", "DeadCodeRule", "EuclideanCodebook", "LayerStep", "Quantizer",
           "ResidualVectorQuantization", "RVQOutput", "VectorQuantization", "nearest_codes", "nearest_neighbours"]
