"""Property-based fuzzing of nested and shared pickle structures (hypothesis).

- Parity: for structures of plain data, what `pickle_scan` measures from the opcodes (nesting depth,
  visits of a full walk counting every shared reference) equals what a plain recursive walk of the
  unpickled object counts.
- Safety: whatever the structure (deep tuple chains as dict keys, lists nested by later appends,
  shared subtrees of tensors, cycles), in a plain, legacy or zip container, `load_quantizer` and
  `FeatureSource` end in one line naming the file, quickly, refusing exactly what is over a limit.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import time
from pathlib import Path

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rvq_viewer.errors import RvqViewerError
from rvq_viewer.io import FeatureSource, load_quantizer
from rvq_viewer.io import limits
from rvq_viewer.io.pickle_scan import check_pickle
from test_hostile_pickles import WRAPPERS, Pickle, deep_lists_by_mutation, deep_set

FUZZ = settings(max_examples=int(os.environ.get("RVQ_FUZZ_EXAMPLES", "40")), deadline=None,
                derandomize=not os.environ.get("RVQ_FUZZ_RANDOM"), database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
_ROOT = Path(tempfile.mkdtemp(prefix="rvq-fuzz-pickles-"))
SECONDS = 20


# --- shared structures of real objects -------------------------------------------------------------------
@st.composite
def shared_structures(draw, leaves=st.one_of(st.integers(-2 ** 40, 2 ** 40), st.text(max_size=6),
                                             st.none(), st.booleans(), st.floats(allow_nan=False))):
    """Objects built one by one, each a leaf or a container of earlier objects (so any object may be
    referenced from many places), some lists filled only after others took them in."""
    made: list = [draw(leaves)]
    for _ in range(draw(st.integers(1, 14))):
        kind = draw(st.sampled_from(["leaf", "tuple", "list", "dict", "late"]))
        picks = draw(st.lists(st.integers(0, len(made) - 1), max_size=5))
        items = [made[i] for i in picks]
        if kind == "leaf":
            made.append(draw(leaves))
        elif kind == "tuple":
            made.append(tuple(items))
        elif kind == "list":
            made.append(list(items))
        elif kind == "dict":
            made.append({f"k{i}": item for i, item in enumerate(items)})
        else:
            lists = [m for m in made if isinstance(m, list)]
            if lists:
                draw(st.sampled_from(lists)).extend(items)        # may make a cycle: that is allowed
    return made[-1] if draw(st.booleans()) else made


def true_walk(obj, path=()) -> tuple[int, int]:
    """(visits, depth) of a plain recursive walk; a reference back into the current path counts once."""
    if not isinstance(obj, (list, tuple, dict)):
        return 1, 0
    if id(obj) in path:
        return 1, 0
    inner = path + (id(obj),)
    children = [x for kv in obj.items() for x in kv] if isinstance(obj, dict) else list(obj)
    visits, depth = 1, 0
    for child in children:
        v, d = true_walk(child, inner)
        visits, depth = visits + v, max(depth, d)
    return visits, depth + 1


def _acyclic(obj, path=()) -> bool:
    if not isinstance(obj, (list, tuple, dict)):
        return True
    if id(obj) in path:
        return False
    children = [x for kv in obj.items() for x in kv] if isinstance(obj, dict) else list(obj)
    return all(_acyclic(child, path + (id(obj),)) for child in children)


@FUZZ
@given(obj=shared_structures())
def test_the_scan_measures_what_a_walk_of_the_object_visits(obj):
    if not _acyclic(obj):
        return                                  # parity is defined for trees and DAGs; cycles below
    visits, depth = true_walk(obj)
    if visits > 200_000:
        return
    measure = check_pickle(pickle.dumps(obj, protocol=2), _ROOT / "x.pt")
    assert (measure.expanded, measure.depth) == (visits, depth)


@FUZZ
@given(obj=shared_structures(leaves=st.sampled_from(["t0", "t1", 3, None])), wrapper=st.sampled_from(["zip", "legacy"]),
       fan=st.integers(1, 64), levels=st.integers(0, 7))
def test_shared_tensors_load_or_are_refused_in_one_line(obj, wrapper, fan, levels):
    """The structure with its string leaves replaced by (shared) tensors, optionally inside `fan`-way
    sharing `levels` deep, saved by torch: a clean refusal iff the walk would be over the limit."""
    tensors = {"t0": torch.zeros(3, 4), "t1": torch.ones(2)}
    built = _with_tensors(obj, tensors, {})
    for _ in range(levels):
        built = [built] * fan
    path = _ROOT / f"shared-{wrapper}.pt"
    torch.save({"quantizer.vq.layers.0._codebook.embed": torch.randn(8, 4), "meta": built}, path,
               _use_new_zipfile_serialization=wrapper == "zip")
    visits = fan ** levels if levels else 1
    start = time.monotonic()
    try:
        load_quantizer(path)
        refused = False
    except RvqViewerError as exc:
        text = str(exc)
        assert "\n" not in text and text.startswith(str(path)), text
        refused = "refused" in text
    assert time.monotonic() - start < SECONDS
    if visits > limits.MAX_EXPANDED * 10:
        assert refused, "an expansion far over the limit must be refused"


def _with_tensors(obj, tensors, done):
    if isinstance(obj, str) and obj in tensors:
        return tensors[obj]
    if id(obj) in done:
        return done[id(obj)]
    if isinstance(obj, list):
        out: list = []
        done[id(obj)] = out
        out.extend(_with_tensors(x, tensors, done) for x in obj)
        return out
    if isinstance(obj, tuple):
        return tuple(_with_tensors(x, tensors, done) for x in obj)
    if isinstance(obj, dict):
        return {k: _with_tensors(v, tensors, done) for k, v in obj.items()}
    return obj


# --- nested opcode streams ------------------------------------------------------------------------------
@st.composite
def nested_streams(draw):
    """A pickle that nests tuples (as a value, a dict key or a set item) or lists (appended into each
    other after they were made) to a depth drawn around the limit, or far past it."""
    depth = draw(st.one_of(st.integers(1, 2 * limits.MAX_NESTING), st.integers(limits.MAX_NESTING - 2,
                                                                               limits.MAX_NESTING + 2),
                           st.sampled_from([10_000, 200_000])))
    shape = draw(st.sampled_from(["value", "key", "set", "lists"]))
    chain = b")" + b"\x85" * (depth - 1)
    if shape == "value":
        return Pickle().raw(chain).bytes(), depth, shape
    if shape == "key":
        return Pickle().raw(b"}" + chain).int(1).raw(b"s").bytes(), depth + 1, shape
    if shape == "set":      # the call, its argument tuple and list count as containers too
        return deep_set(depth), depth + 3, shape
    return deep_lists_by_mutation(depth), depth + 1, shape


@FUZZ
@given(stream=nested_streams(), wrapper=st.sampled_from(sorted(WRAPPERS)))
def test_nesting_is_refused_exactly_over_the_limit(stream, wrapper):
    data, depth, shape = stream
    path = WRAPPERS[wrapper](data, _ROOT / f"nested-{wrapper}{'.pth' if wrapper == 'sovits' else '.pt'}")
    over = depth > limits.MAX_NESTING
    start = time.monotonic()
    loaders = [load_quantizer] + ([lambda p: FeatureSource([p], 4).total_frames()] if wrapper != "sovits" else [])
    for load in loaders:
        try:
            load(path)
            raise AssertionError("a pickle of no tensors cannot load")
        except RvqViewerError as exc:
            text = str(exc)
            assert "\n" not in text and text.startswith(str(path)), text
            assert ("refused: the pickle nests" in text) == over, (depth, shape, text)
    assert time.monotonic() - start < SECONDS
