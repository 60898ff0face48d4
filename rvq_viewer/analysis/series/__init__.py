"""A training run seen through its saved checkpoints: their order, the dead-code events between them, and
the events as columns for the timeline."""

from .events import (CheckpointFindings, Event, EventsReport, Summary, code_spacing, find_events, iter_findings,
                     layer_events)
from .ordering import Series, SeriesEntry, list_checkpoints, open_series, stored_step
from .table import EVENT_KINDS, AggregatedEvents, EventTable, died_at_mapping, died_at_steps, summary_arrays

__all__ = ["EVENT_KINDS", "AggregatedEvents", "CheckpointFindings", "Event", "EventTable", "EventsReport", "Series",
           "SeriesEntry", "Summary", "code_spacing", "died_at_mapping", "died_at_steps", "find_events", "iter_findings",
           "layer_events", "list_checkpoints", "open_series", "stored_step", "summary_arrays"]
