"""The quantizer math: EnCodec / GPT-SoVITS codebooks, their residual stack, loaded quantizers (learned
codebooks, FSQ grids, LFQ bits, SimVQ), and the one nearest-neighbour search everything else uses. Torch
only: nothing here reads files."""

from .codebook import DeadCodeEvent, EuclideanCodebook
from .family import FAMILIES, FSQ, LFQ, SIMVQ, VQ, Family, family_named
from .fsq import FSQQuantizer, FSQRule
from .lfq import LFQQuantizer
from .neighbours import nearest_neighbours
from .quantizer import DeadCodeRule, LayerStep, Quantizer
from .search import nearest_codes
from .simvq import SimVQQuantizer, effective_codebook
from .vq import ResidualVectorQuantization, RVQOutput, VectorQuantization

__all__ = ["DeadCodeEvent", "DeadCodeRule", "EuclideanCodebook", "FAMILIES", "FSQ", "FSQQuantizer", "FSQRule",
           "Family", "LFQ", "LFQQuantizer", "LayerStep", "Quantizer", "ResidualVectorQuantization", "RVQOutput",
           "SIMVQ", "SimVQQuantizer", "VQ", "VectorQuantization", "effective_codebook", "family_named",
           "nearest_codes", "nearest_neighbours"]
