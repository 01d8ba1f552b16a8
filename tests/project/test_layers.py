"""Every import points downward: the layers of pyproject.toml ([tool.importlinter]) hold, and every
module of the package sits in one of them, so a new module cannot slip past the check."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.support import ROOT


def layer_modules() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    [layers] = [c["layers"] for c in config["contracts"] if c["type"] == "layers"]
    return [module for layer in layers for module in re.split(r"\s*[:|]\s*", layer)]


def package_modules() -> list[str]:
    """Every module but the packages' ``__init__`` files (docstrings only)."""
    paths = sorted((ROOT / "services").rglob("*.py"))
    return [".".join(p.relative_to(ROOT).with_suffix("").parts) for p in paths if p.name != "__init__.py"]


def test_every_module_has_a_layer() -> None:
    layered = layer_modules()
    unplaced = [m for m in package_modules() if not any(m == lay or m.startswith(f"{lay}.") for lay in layered)]
    assert unplaced == [], f"modules in no layer of [tool.importlinter]: {unplaced}"


def test_every_import_points_downward() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr
    assert "0 broken" in result.stdout
