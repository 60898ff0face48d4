"""Reference implementations from the peers' own packages, reached without their heavy package imports."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest


def encodec_core_vq():
    """EnCodec's `encodec/quantization/core_vq.py` from the PyPI package, without `encodec/__init__`.

    The package `__init__` imports torchaudio, which need not load beside this torch; core_vq itself
    needs only torch, einops and `encodec.distrib`, so those two files are loaded by path under a
    stand-in package module.
    """
    name = "_encodec_ref"
    if f"{name}.quantization.core_vq" in sys.modules:
        return sys.modules[f"{name}.quantization.core_vq"]
    spec = importlib.util.find_spec("encodec")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("the encodec package is not installed: the README's test command installs it")
    root = Path(list(spec.submodule_search_locations)[0])
    for pkg, path in ((name, root), (f"{name}.quantization", root / "quantization")):
        module = types.ModuleType(pkg)
        module.__path__ = [str(path)]
        sys.modules[pkg] = module
    for mod, path in ((f"{name}.distrib", root / "distrib.py"),
                      (f"{name}.quantization.core_vq", root / "quantization" / "core_vq.py")):
        mspec = importlib.util.spec_from_file_location(mod, path)
        module = importlib.util.module_from_spec(mspec)
        sys.modules[mod] = module
        mspec.loader.exec_module(module)
    return sys.modules[f"{name}.quantization.core_vq"]
