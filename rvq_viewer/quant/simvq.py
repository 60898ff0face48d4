"""SimVQ (Zhu et al. 2024, arXiv 2411.02038): a frozen random codebook C and a learned linear
`code_transform` W; the codebook actually used is W(C). That effective codebook is what is searched (with
the one nearest-neighbour search, `quant/search.py`), shown and mapped: a SimVQ layer is then an ordinary
Euclidean VQ layer over W(C), and the residual loses the effective codeword.

vector-quantize-pytorch's `SimVQ` (and each layer of `ResidualSimVQ`) stores `frozen_codebook` [K, Df]
and `code_transform.weight` [D, Df] (a bias-free Linear unless the user passed another module); its
eval-mode output is the rotation trick's `rotate_to(x, q)`, equal to the codeword q up to rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .family import SIMVQ
from .quantizer import Quantizer


def effective_codebook(frozen: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """W(C): the frozen codebook [K, Df] through the Linear code transform (weight [D, Df]) -> [K, D],
    computed as the module computes it (F.linear), so ties break alike."""
    return F.linear(frozen.float(), weight.float(), None if bias is None else bias.float())


class SimVQQuantizer(Quantizer):
    """A Euclidean residual VQ whose codebooks are SimVQ's effective codebooks."""

    family = SIMVQ
