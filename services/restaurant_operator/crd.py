"""The Restaurant CustomResourceDefinition: the one file Helm installs and the tests read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from services.runtime.settings import REPO_ROOT

CRD_PATH = REPO_ROOT / "charts" / "baedal" / "crds" / "restaurants.baedal.io.yaml"
GROUP = "baedal.io"
VERSION = "v1"
PLURAL = "restaurants"
KIND = "Restaurant"


def load_crd(path: Path = CRD_PATH) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        crd: dict[str, Any] = yaml.safe_load(handle)
    return crd


def served_version(crd: dict[str, Any], version: str = VERSION) -> dict[str, Any]:
    entry: dict[str, Any] = next(v for v in crd["spec"]["versions"] if v["name"] == version)
    return entry
