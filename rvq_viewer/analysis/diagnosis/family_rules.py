"""The rules of implicit grids: an FSQ dimension or an LFQ bit that stops carrying information.

They read a layer's family section (`analysis/audit/grid.py`, `bits.py`), one table at a time, and give
one verdict per rule and layer listing every dimension (or bit) and table it holds for. Thresholds and
their sources are in `thresholds.py`; each compares a dimension with what its own number of levels
allows, so they scale with the grid.
"""

from __future__ import annotations

from ..audit import LayerReport
from .thresholds import (BIT_RULE_MIN_FRAMES, FSQ_DIM_BITS_WARN, FSQ_EDGE_SHARE_WARN, FSQ_LEVELS, FSQ_SCALE,
                         LFQ_BIT_ENTROPY_WARN, LFQ_BITS, LFQ_CORRELATION_WARN, LFQ_ENTROPY)
from .verdict import Verdict

VIEW = "family"


def _label(report: LayerReport, t: int) -> str:
    tables = report.family.get("tables")
    return f" ({tables[t]['name']})" if tables else ""


def _join(items) -> str:
    items = list(items)
    shown = ", ".join(str(i) for i in items[:8])
    return shown + (f" and {len(items) - 8} more" if len(items) > 8 else "")


def _named(noun: str, items: list, singular: str, plural: str) -> str:
    """'FSQ dimension 3 uses few of its levels' / 'FSQ dimensions 1, 3 use few of their levels'."""
    many = len(items) > 1
    return f"{noun}{'s' if many else ''} {_join(items)} {plural if many else singular}"


def fsq_verdicts(report: LayerReport) -> list[Verdict]:
    """Pinned dimensions (one level: collapse), narrow ones (under FSQ_DIM_BITS_WARN of log2 L bits) and
    saturated ones (FSQ_EDGE_SHARE_WARN of frames at the two edge levels, where uniform puts <= half)."""
    pinned, narrow, saturated = [], [], []
    for t, grid in enumerate(report.family.get("grids", [])):
        if grid["frames"] < BIT_RULE_MIN_FRAMES:
            continue
        for d in grid["dims"]:
            where = (t, d["dim"], d)
            if d["levels_used"] <= 1:
                pinned.append(where)
            elif d["bits"] < FSQ_DIM_BITS_WARN * d["max_bits"]:
                narrow.append(where)
            if d["levels_used"] > 1 and d["uniform_edge_share"] <= 0.5 and d["edge_share"] >= FSQ_EDGE_SHARE_WARN:
                saturated.append(where)
    layer = report.layer
    out = []
    if pinned:
        t, j, d = pinned[0]
        out.append(Verdict(
            "fsq_pinned_dimension", layer, "collapse",
            f"Layer {layer}{_label(report, t)}: "
            + _named("FSQ dimension", [x[1] for x in pinned], "pinned at one level", "pinned at one level each"),
            {"dims": [x[1] for x in pinned], "tables": sorted({x[0] for x in pinned}),
             "level": d["counts"].index(max(d["counts"])), "levels": d["levels"], "frames": sum(d["counts"]),
             "min_frames": BIT_RULE_MIN_FRAMES},
            f"On {sum(d['counts'])} frames dimension {j} always takes level {d['counts'].index(max(d['counts']))} "
            f"of its {d['levels']}: it carries no information, and the grid is {d['levels']}x smaller than "
            f"its {report.codebook_size} cells (the FSQ form of collapse; no cell is 'dead', none is reached).",
            f"{FSQ_SCALE}; or drop the dimension.", VIEW,
            "the projected input of this dimension is (near) constant: project_in gives it no signal, or a "
            "huge offset keeps it at one edge"))
    if narrow:
        t, j, d = min(narrow, key=lambda x: x[2]["bits"] / x[2]["max_bits"])
        out.append(Verdict(
            "fsq_narrow_dimension", layer, "warning",
            f"Layer {layer}{_label(report, t)}: "
            + _named("FSQ dimension", [x[1] for x in narrow], "uses few of its levels", "use few of their levels"),
            {"dims": [x[1] for x in narrow], "tables": sorted({x[0] for x in narrow}),
             "bits": [round(x[2]["bits"], 3) for x in narrow], "max_bits": [round(x[2]["max_bits"], 3) for x in narrow],
             "levels_used": [x[2]["levels_used"] for x in narrow], "warn_below": FSQ_DIM_BITS_WARN},
            f"Dimension {j} uses {d['levels_used']} of its {d['levels']} levels and carries {d['bits']:.2f} of "
            f"{d['max_bits']:.2f} bits (warning below {FSQ_DIM_BITS_WARN} of them).",
            f"{FSQ_SCALE}; {FSQ_LEVELS}.", VIEW,
            "the projected input spans only part of the bounded range: its scale is too small for the levels"))
    if saturated:
        t, j, d = max(saturated, key=lambda x: x[2]["edge_share"])
        out.append(Verdict(
            "fsq_saturated_dimension", layer, "warning",
            f"Layer {layer}{_label(report, t)}: "
            + _named("FSQ dimension", [x[1] for x in saturated], "is stuck at its edge levels",
                     "are stuck at their edge levels"),
            {"dims": [x[1] for x in saturated], "tables": sorted({x[0] for x in saturated}),
             "edge_share": [round(x[2]["edge_share"], 4) for x in saturated], "warn_at": FSQ_EDGE_SHARE_WARN},
            f"{d['edge_share']:.0%} of dimension {j}'s frames sit at its two edge levels (uniform use: "
            f"{d['uniform_edge_share']:.0%}): the bound saturates and the inner levels go unused.",
            f"{FSQ_SCALE}.", VIEW,
            "the projected input is too large for the bound (tanh saturates), often a missing normalisation"))
    return out


def lfq_verdicts(report: LayerReport) -> list[Verdict]:
    """Dead bits (never flip: collapse), unbalanced bits (under LFQ_BIT_ENTROPY_WARN bits) and correlated
    pairs (|phi| >= LFQ_CORRELATION_WARN)."""
    dead, unbalanced, correlated = [], [], []
    for t, stats in enumerate(report.family.get("bit_stats", [])):
        if stats["frames"] < BIT_RULE_MIN_FRAMES:
            continue
        for b in range(stats["bits"]):
            if b in stats["dead"]:
                dead.append((t, b, stats["ones"][b]))
            elif stats["entropy"][b] < LFQ_BIT_ENTROPY_WARN:
                unbalanced.append((t, b, stats["ones"][b]))
        corr = stats["correlation"]
        for i in range(stats["bits"]):
            for j in range(i + 1, stats["bits"]):
                if abs(corr[i][j]) >= LFQ_CORRELATION_WARN:
                    correlated.append((t, (i, j), corr[i][j]))
    layer = report.layer
    out = []
    if dead:
        t, b, ones = dead[0]
        out.append(Verdict(
            "lfq_dead_bit", layer, "collapse",
            f"Layer {layer}{_label(report, t)}: "
            + _named("LFQ bit", [x[1] for x in dead], "never flips", "never flip"),
            {"bits": [x[1] for x in dead], "tables": sorted({x[0] for x in dead}),
             "always_one": [x[1] for x in dead if x[2] >= 1.0], "always_zero": [x[1] for x in dead if x[2] <= 0.0],
             "min_frames": BIT_RULE_MIN_FRAMES},
            f"Bit {b} is {'always 1' if ones >= 1.0 else 'always 0'} on these frames: it is the LFQ form of a dead "
            f"code, and the {2 ** len(report.family['bit_stats'][t]['ones'])} codes of the table are halved for "
            f"each such bit.",
            f"{LFQ_ENTROPY}; {LFQ_BITS}.", VIEW,
            "the projected input of this dimension never changes sign (a bias or offset dominates it)"))
    if unbalanced:
        t, b, ones = min(unbalanced, key=lambda x: min(x[2], 1 - x[2]))
        out.append(Verdict(
            "lfq_unbalanced_bit", layer, "warning",
            f"Layer {layer}{_label(report, t)}: "
            + _named("LFQ bit", [x[1] for x in unbalanced], "rarely flips", "rarely flip"),
            {"bits": [x[1] for x in unbalanced], "tables": sorted({x[0] for x in unbalanced}),
             "ones": [round(x[2], 4) for x in unbalanced], "warn_below_bits": LFQ_BIT_ENTROPY_WARN},
            f"Bit {b} is set on {ones:.1%} of frames: it carries under {LFQ_BIT_ENTROPY_WARN} bit "
            f"(a balanced bit carries 1).",
            f"{LFQ_ENTROPY}.", VIEW, "the entropy penalty does not keep the bit balanced"))
    if correlated:
        t, (i, j), phi = max(correlated, key=lambda x: abs(x[2]))
        out.append(Verdict(
            "lfq_correlated_bits", layer, "warning",
            f"Layer {layer}{_label(report, t)}: {len(correlated)} pair{'s' if len(correlated) > 1 else ''} of LFQ "
            f"bits move together",
            {"pairs": [list(x[1]) for x in correlated[:20]], "correlation": [round(x[2], 4) for x in correlated[:20]],
             "tables": sorted({x[0] for x in correlated}), "warn_at": LFQ_CORRELATION_WARN},
            f"Bits {i} and {j} correlate at phi = {phi:+.2f} (warning at |phi| >= {LFQ_CORRELATION_WARN}): "
            f"together they carry little more than one bit.",
            f"{LFQ_ENTROPY}; {LFQ_BITS}.", VIEW,
            "project_in maps two directions to nearly the same one (redundant output rows)"))
    return out


def family_verdicts(report: LayerReport, family: str | None) -> list[Verdict]:
    if family == "fsq":
        return fsq_verdicts(report)
    if family == "lfq":
        return lfq_verdicts(report)
    return []
