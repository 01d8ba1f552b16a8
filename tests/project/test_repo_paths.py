"""Every file of the repository stands on its own: each relative path in it names a file of the repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.support import ROOT

RELATIVE_PATH = re.compile(r"(?<![.\w])(?:\.\./)+[\w.-]+(?:/[\w.-]+)*")


def tracked_text_files() -> list[Path]:
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    files = []
    for name in names.splitlines():
        path = ROOT / name
        if path.is_file() and b"\0" not in path.read_bytes()[:4096]:
            files.append(path)
    return files


def test_no_file_points_to_a_path_outside_the_repository_or_to_nothing() -> None:
    outside = []
    for path in tracked_text_files():
        for match in RELATIVE_PATH.finditer(path.read_text(errors="replace")):
            target = (path.parent / match.group()).resolve()
            if not target.is_relative_to(ROOT) or not target.exists():
                outside.append(f"{path.relative_to(ROOT)}: {match.group()}")
    assert not outside, outside
