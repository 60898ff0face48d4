"""A wheel carries what the app needs outside the package (icon, style, desktop entry, the demo), and the
app finds them where the wheel installs them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from rvq_viewer import locations
from rvq_viewer.locations import demo_paths

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Built from a copy: an in-tree build would leave build/ and egg-info behind in the checkout.
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info",
                                                             "__pycache__", ".pytest_cache", "docs"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (built,) = (tmp / "dist").glob("rvq_viewer-*.whl")
    return built


def _data_files(wheel: Path) -> dict[str, str]:
    """share/... path -> archive name, for the files the wheel installs under the prefix."""
    with zipfile.ZipFile(wheel) as zf:
        return {name.split(".data/data/", 1)[1]: name for name in zf.namelist() if ".data/data/" in name}


def test_wheel_installs_desktop_entry_icon_style_and_demo(wheel):
    files = _data_files(wheel)
    assert "share/applications/rvq-viewer.desktop" in files
    assert "share/icons/hicolor/scalable/apps/rvq-viewer.svg" in files
    assert {"share/rvq-viewer/resources/style.qss", "share/rvq-viewer/resources/rvq-viewer.svg"} <= set(files)
    demo = ROOT / "assets" / "demo"
    for path in demo.rglob("*"):
        if path.is_file():
            assert f"share/rvq-viewer/demo/{path.relative_to(demo).as_posix()}" in files, path


def test_installed_app_finds_its_files_without_a_checkout(wheel, tmp_path, monkeypatch):
    prefix = tmp_path / "prefix"
    with zipfile.ZipFile(wheel) as zf:
        for share, name in _data_files(wheel).items():
            target = prefix / share
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(name))
    monkeypatch.setattr(locations, "CHECKOUT", tmp_path / "no-checkout")
    monkeypatch.setattr(sysconfig, "get_path", lambda name, scheme=None: str(prefix))
    assert (locations.resources_dir() / "style.qss").is_file()
    checkpoint, features = demo_paths()
    assert checkpoint == prefix / "share" / "rvq-viewer" / "demo" / "healthy.pt"
    assert checkpoint.is_file() and all(f.is_file() for f in features)


def test_wheel_carries_the_native_kernels_source_beside_its_loader(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert {"rvq_viewer/quant/_native.py", "rvq_viewer/quant/nearest.c"} <= names
        assert b"rvq_nearest_abi" in zf.read("rvq_viewer/quant/nearest.c")
