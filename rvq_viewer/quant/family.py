"""What kind of quantizer a `Quantizer` is, as one small descriptor every client reads instead of testing
classes: how its codes are found, whether its codebook is learned, and what "usage" and "unused" mean.

    quantizer.family.name            # "vq", "fsq", "lfq" or "simvq"
    quantizer.family.learned         # False for an implicit grid: no geometry rules, no EMA
    quantizer.family.unused          # "unused codes", "unused grid cells", "unused sign patterns"
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    """A quantizer family. `rule` is how a code is found: "nearest" (a nearest-neighbour search of the
    codebook), "rounding" (FSQ: each dimension rounded to one of its levels) or "sign" (LFQ: one bit per
    dimension). `learned` is whether codebook rows are trained vectors, so that their geometry
    (near-duplicates, rank) means something; an implicit grid is the same for every checkpoint."""

    name: str
    label: str
    rule: str
    learned: bool
    code: str            # what one code is, singular ("code", "grid cell", "sign pattern")
    usage: str           # what usage measures, for the README and the app

    @property
    def codes(self) -> str:
        return self.code + "s"

    @property
    def unused(self) -> str:
        return f"unused {self.codes}"

    def to_dict(self) -> dict:
        return {"name": self.name, "label": self.label, "rule": self.rule, "learned": self.learned}


VQ = Family("vq", "learned-codebook VQ", "nearest", True, "code",
            "share of the K codes that win at least one frame; EMA statistics, when stored, say which the "
            "checkpoint calls dead")
FSQ = Family("fsq", "finite scalar quantization", "rounding", False, "grid cell",
             "share of the prod(levels) grid cells hit; per dimension, which of its levels are used and how "
             "many bits it carries")
LFQ = Family("lfq", "lookup-free quantization", "sign", False, "sign pattern",
             "share of the 2^d sign patterns hit; per bit, the share of ones, its entropy and its correlation "
             "with the other bits; a bit that never flips is a dead bit")
SIMVQ = Family("simvq", "SimVQ (frozen codebook, learned transform)", "nearest", True, "code",
               "share of the K codes of the effective codebook (code_transform of the frozen one) that win a "
               "frame")

FAMILIES = {f.name: f for f in (VQ, FSQ, LFQ, SIMVQ)}


def family_named(name: str | None) -> Family:
    """The family called `name` (VQ for None or an unknown name: a result written before families)."""
    return FAMILIES.get(name or "vq", VQ)
