"""The README's tour, run as written against a real ``baedal up`` on another port and data dir."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import EXAMPLES, ROOT
from tests.support.server import Server, clean_env, running

pytestmark = pytest.mark.slow
README = ROOT / "README.md"


def tour_script() -> str:
    """The first ``sh`` block under the tour's heading."""
    text = README.read_text()
    section = text[text.index("## A tour") :]
    match = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert match, "the README has no tour"
    return match.group(1)


def json_documents(output: str) -> list[Any]:
    """Every JSON value printed, in order (one per line, the audit report across several)."""
    decoder, documents, at = json.JSONDecoder(), [], 0
    while (at := _skip_space(output, at)) < len(output):
        document, at = decoder.raw_decode(output, at)
        documents.append(document)
    return documents


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at].isspace():
        at += 1
    return at


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("readme")
    with running(Server(base / "data", clean_env(BAEDAL_DEMO_MANIFESTS=str(EXAMPLES)))) as server:
        yield server


def test_the_tour_gets_every_response_the_readme_promises(server: Server, tmp_path: Path) -> None:
    # The tour runs `.venv/bin/baedal` from the repository root; here that is this interpreter's.
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "baedal").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m services "$@"\n')
    (bin_dir / "baedal").chmod(0o755)
    # A loaded test machine gets more time than a person needs between two steps.
    script = tour_script().replace("sleep 1\n", "sleep 2\n")
    env = clean_env(BAEDAL_URL=server.url, BAEDAL_DATA_DIR=str(server.data_dir), PATH=os.environ["PATH"])
    result = subprocess.run(
        ["bash", "-eo", "pipefail", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert "Traceback" not in result.stderr, result.stderr

    documents = json_documents(result.stdout)
    restaurants, menu, *steps, audit = documents
    assert "seoul-chicken" in {r["id"] for r in restaurants}
    assert menu["restaurant"]["id"] == "seoul-chicken"

    balances = [d["balance"] for d in steps if isinstance(d, dict) and "balance" in d]
    assert balances == [100000, 61000, 61000], "top-up, paid order, refunded cancel"

    orders = [d for d in steps if isinstance(d, dict) and "history" in d]
    first, second = orders[0]["id"], next(o["id"] for o in orders if o["restaurant_id"] == "hanok-bibimbap")
    assert [h["status"] for h in orders[0]["history"]] == ["PENDING", "PAID", "ACCEPTED"]
    assert [o["status"] for o in orders if o["id"] == second] == ["ACCEPTED", "CANCELLING"]
    assert next(o for o in orders if o["id"] == second)["history"][-1]["status"] == "ACCEPTED"
    assert [h["status"] for h in orders[-1]["history"]] == [
        "PENDING", "PAID", "ACCEPTED", "COOKING", "READY", "PICKED_UP", "DELIVERED", "COMPLETED",
    ]  # fmt: skip
    assert orders[-1]["id"] == first

    paid_list, available = [d for d in steps if isinstance(d, list)][:2]
    assert [o["id"] for o in paid_list] == [second] and paid_list[0]["status"] == "PAID"
    assert first in {d["order_id"] for d in available}

    delivery = [d["status"] for d in steps if isinstance(d, dict) and "rider_id" in d]
    assert delivery == ["CLAIMED", "PICKED_UP", "DELIVERED"]

    notifications = [d for d in steps if isinstance(d, list) and d and "message" in d[0]][-1]
    assert {(n["order_id"], n["status"]) for n in notifications} >= {(second, "CANCELLED"), (first, "COMPLETED")}

    assert audit["ok"] is True and audit["violations"] == []
