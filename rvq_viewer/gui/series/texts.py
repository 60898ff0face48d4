"""What the Events dock says: its header, a mark's codes and a code's history, as rich text."""

from __future__ import annotations

import html

import numpy as np

from ...analysis.series import EVENT_KINDS
from .marks import KIND_COLORS, KIND_MARKS
from ..theme import current

LIST_MAX = 5_000                  # codes listed for one mark


def header_text(r, aggregated_marks: int | None, session_open: bool, linked: bool, reference: int | None) -> str:
    """The series, its order, its events by kind, and how the open checkpoint relates to it."""
    counts = r.events.counts_by_kind()
    kinds = " · ".join(f"<span style='color:{KIND_COLORS[k]}'>{KIND_MARKS[k]} {counts[k]:,} {k}</span>"
                       for k in EVENT_KINDS)
    text = (f"<b>{len(r.steps)} checkpoints</b> in {html.escape(str(r.paths[0].parent))}, ordered by "
            f"<b>{html.escape(r.order)}</b>: steps {r.steps[0]:,} … {r.steps[-1]:,}. {kinds}")
    if aggregated_marks is not None:
        text += (f"<br><i>{len(r.events):,} events drawn as {aggregated_marks:,} marks, one per (step, layer, "
                 "kind), size ∝ log(count): click one for its codes.</i>")
    if r.note:
        text += f"<br><span style='color:{current().note}'>{html.escape(r.note)}</span>"
    if session_open and not linked:
        text += (f"<br><span style='color:{current().note}'>The open checkpoint is another quantizer (n_q/K differ): "
                 "selecting here does not select in the other views.</span>")
    elif session_open and reference is not None:
        text += f"<br>The open checkpoint is step {r.steps[reference]:,} of this series."
    elif session_open:
        text += ("<br>The open checkpoint is not one of these files (same n_q and K): selections are shared "
                 "by code index; 'EMA-dead since' refers to the last checkpoint of the series.")
    return text


def mark_text(step: int, layer: int, kind: int, codes: np.ndarray) -> str:
    name = EVENT_KINDS[kind]
    return (f"<b>Step {step:,}, layer {layer}</b>: <span style='color:{KIND_COLORS[name]}'>"
            f"{codes.size:,} code{'s' if codes.size != 1 else ''} {name}</span>"
            + (f" (first {LIST_MAX:,} listed)" if codes.size > LIST_MAX else ""))


def history_text(r, selected: tuple[int, int] | None, died_at: dict) -> str:
    """The selected code's events in the series, and since when it has been EMA-dead."""
    if selected is None:
        return "<i>Select an event (or a code anywhere) for its history.</i>"
    layer, code = selected
    rows = r.events.of_code(layer, code)
    lines = [html.escape(r.events.describe_row(int(i))) for i in rows[:12]]
    if rows.size > 12:
        lines.append(f"… {rows.size - 12} more")
    died = died_at.get((layer, code))
    extra = ""
    if died is not None:
        extra = f" · EMA-dead since step {died:,}" if died != r.steps[0] else f" · EMA-dead since step ≤ {died:,}"
    return f"<b>Layer {layer}, code {code}</b>{extra}<br>" + ("<br>".join(lines) if lines else
                                                               "<i>no event in the series</i>")
