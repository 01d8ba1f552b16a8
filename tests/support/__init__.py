"""What the tests share: the repository's root, the fake engines, servers and helpers."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "operator" / "examples"
