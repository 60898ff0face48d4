"""The events of a checkpoint series as columns (rvq_viewer.analysis.series.table) and the one PCA."""

from __future__ import annotations

import numpy as np

from rvq_viewer.analysis.pca import PcaProjection, pca_2d
from rvq_viewer.analysis.series import (EVENT_KINDS, Event, EventTable, Summary, died_at_mapping, died_at_steps,
                                        summary_arrays)


# --- event table -----------------------------------------------------------------------------------------

def _events():
    return [Event(400, 1, 7, "died", 2.5, 1.0, None), Event(200, 0, 3, "replaced", 1.0, 1.0, 4.0),
            Event(200, 0, 3, "replaced", 1.0, 1.0, 5.0), Event(200, 0, 9, "replaced", None, None, 2.0),
            Event(200, 0, 1, "died", 3.0, 0.5, None), Event(400, 0, 3, "revived", 0.5, 3.0, None)]


def test_event_table_columns_sort_and_groups():
    table = EventTable.from_events(_events())
    assert len(table) == 6
    keys = list(zip(table.steps, table.layers, table.kinds, table.codes))
    assert keys == sorted(keys)
    assert table.counts_by_kind() == {"died": 2, "revived": 1, "replaced": 3}
    np.testing.assert_array_equal(table.codes_at(200, 0, "replaced"), [3, 9])
    assert table.group(200, 0, "replaced").size == 3
    assert table.codes_at(600, 0, "died").size == 0
    rows = table.of_code(0, 3)
    assert [int(table.steps[r]) for r in rows] == [200, 200, 400]
    assert "EMA size 3 → 0.5" in table.describe_row(int(table.group(200, 0, "died")[0]))
    assert np.isnan(table.size_before[table.group(200, 0, "replaced")]).sum() == 1


def test_aggregate_counts_events_and_distinct_codes():
    table = EventTable.from_events(_events())
    agg = table.aggregate()
    marks = {(int(s), int(l), EVENT_KINDS[int(k)]): (int(c), int(d))
             for s, l, k, c, d in zip(agg.steps, agg.layers, agg.kinds, agg.counts, agg.distinct)}
    assert marks == {(200, 0, "died"): (1, 1), (200, 0, "replaced"): (3, 2), (400, 0, "revived"): (1, 1),
                     (400, 1, "died"): (1, 1)}
    assert int(agg.counts.sum()) == len(table)
    assert len(EventTable.empty().aggregate()) == 0


def test_aggregate_scales_to_hundreds_of_thousands():
    rng = np.random.default_rng(0)
    n = 400_000
    table = EventTable(rng.integers(0, 50, n) * 100, rng.integers(0, 8, n).astype(np.int32),
                       rng.integers(0, 65536, n), rng.integers(0, 3, n).astype(np.int8),
                       *(np.full(n, np.nan, np.float32) for _ in range(3))).sorted()
    agg = table.aggregate()
    assert len(agg) == 50 * 8 * 3 and int(agg.counts.sum()) == n
    step, layer, kind = int(agg.steps[5]), int(agg.layers[5]), int(agg.kinds[5])
    assert table.codes_at(step, layer, kind).size == int(agg.distinct[5])


def test_summary_arrays_leave_unknowns_nan():
    sums = [Summary(200, 0, 5, 10, 7.5), Summary(200, 1, None), Summary(400, 0, 3, 12, 9.0)]
    arrays = summary_arrays(sums, [200, 400], 2)
    assert arrays["ema_dead"][0, 0] == 5 and np.isnan(arrays["ema_dead"][0, 1])
    assert arrays["perplexity"][1, 0] == 9.0 and np.isnan(arrays["used"][1, 1])


def test_died_at_is_the_start_of_the_current_dead_run():
    dead = np.array([[1, 0, 0, 1, 0],
                     [1, 1, 0, 0, 0],
                     [1, 1, 1, 0, 1],
                     [1, 0, 1, 0, 1]], dtype=bool)     # 4 checkpoints x 5 codes
    steps = [100, 200, 300, 400]
    codes, when = died_at_steps(dead, steps)
    assert dict(zip(codes.tolist(), when.tolist())) == {0: 100, 2: 300, 4: 300}
    codes, when = died_at_steps(dead, steps, reference=1)  # as seen at step 200
    assert dict(zip(codes.tolist(), when.tolist())) == {0: 100, 1: 200}
    assert died_at_mapping([dead, dead[:, :2]], steps) == {(0, 0): 100, (0, 2): 300, (0, 4): 300, (1, 0): 100}


def test_pca_projection_matches_pca_2d_and_projects_new_points():
    points = np.random.default_rng(1).normal(size=(300, 12)).astype(np.float32) * np.linspace(3, 0.1, 12)
    proj = PcaProjection.fit(points, max_points=10_000)
    np.testing.assert_allclose(proj.transform(points), pca_2d(points), rtol=1e-4, atol=1e-4)
    shifted = proj.transform(points[:3] + 1.0)
    assert shifted.shape == (3, 2)
