"""The tree keeps its layers: import-linter's contracts (pyproject.toml) hold and fail on an upward import,
one pipeline builds every feature source and calls the diagnosis, and no module grows past ~500 lines."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "rvq_viewer"
MAX_LINES = 520


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_layer_contracts_hold():
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 kept, 0 broken" in done.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    shutil.copytree(PACKAGE, tmp_path / "rvq_viewer", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "rvq_viewer" / "quant" / "upward.py").write_text("from ..pipeline import AuditSpec\n")
    done = lint_imports(tmp_path)
    assert done.returncode != 0
    assert "rvq_viewer.quant.upward" in done.stdout and "BROKEN" in done.stdout


def _calls(name: str) -> list[str]:
    """Modules of the package that call `name(...)` (by its plain or attribute name)."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = node.func
                called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) \
                    else None
                if called == name:
                    found.append(str(path.relative_to(PACKAGE)))
    return sorted(set(found))


def test_one_pipeline_builds_feature_sources_and_diagnoses():
    assert _calls("FeatureSource") == ["pipeline/audit.py"]
    assert _calls("diagnose") == ["pipeline/audit.py", "pipeline/runs.py"]
    assert _calls("iter_audit") == ["analysis/audit/engine.py", "pipeline/audit.py"]


def test_no_module_is_much_over_500_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"split these by concept: {long}"
