"""A payment-gateway simulator: the external card processor, with knobs for latency, failures,
outages and declined cards. Idempotent by key, like a real gateway, and, given a ledger file, it
remembers its charges across restarts like one too (``baedal up`` keeps it in the data dir, so a
refund after a restart finds the charge it refunds). It also stands in for the customers' message
channel (``POST /notifications``) where there is none, as in the chart's default install."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field


class Knobs(BaseModel):
    latency_ms: int = Field(0, ge=0, le=60_000)
    failure_rate: float = Field(0.0, ge=0, le=1)
    down: bool = False
    declined_tokens: list[str] = Field(default_factory=lambda: ["tok_declined"])


class Charge(BaseModel):
    idempotency_key: str = Field(min_length=1, max_length=200)
    card_token: str = Field(min_length=1, max_length=200)
    amount: int = Field(gt=0)


class Refund(BaseModel):
    idempotency_key: str = Field(min_length=1, max_length=200)


class Ledger:
    """The charges by idempotency key: in memory, or kept in a SQLite file."""

    def __init__(self, path: Path | None = None) -> None:
        self._db = sqlite3.connect(path or ":memory:", isolation_level=None)
        self._db.execute("CREATE TABLE IF NOT EXISTS charges (key TEXT PRIMARY KEY, charge TEXT NOT NULL)")

    def get(self, key: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT charge FROM charges WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, charge: dict[str, Any]) -> None:
        self._db.execute("INSERT OR REPLACE INTO charges (key, charge) VALUES (?, ?)", (key, json.dumps(charge)))

    def __len__(self) -> int:
        count: int = self._db.execute("SELECT COUNT(*) FROM charges").fetchone()[0]
        return count


def create_app(ledger: Path | None = None) -> FastAPI:
    app = FastAPI(title="Baedal payment-gateway simulator")
    charges = Ledger(ledger)
    state: dict[str, Any] = {"knobs": Knobs(), "calls": 0, "notifications": []}

    async def behave() -> None:
        knobs: Knobs = state["knobs"]
        state["calls"] += 1
        if knobs.latency_ms:
            await asyncio.sleep(knobs.latency_ms / 1000)
        if knobs.down or random.random() < knobs.failure_rate:
            raise HTTPException(503, "gateway unavailable")

    @app.post("/charges", status_code=201)
    async def charge(body: Charge) -> dict[str, Any]:
        await behave()
        earlier = charges.get(body.idempotency_key)
        if earlier is None:
            declined = body.card_token in state["knobs"].declined_tokens
            earlier = {
                "charge_id": f"ch_{body.idempotency_key}",
                "amount": body.amount,
                "status": "declined" if declined else "approved",
            }
            charges.put(body.idempotency_key, earlier)
        return earlier

    @app.post("/refunds")
    async def refund(body: Refund) -> dict[str, Any]:
        await behave()
        charge = charges.get(body.idempotency_key)
        if charge is None or charge["status"] not in ("approved", "refunded"):
            raise HTTPException(404, "no approved charge for this key")
        charge["status"] = "refunded"
        charges.put(body.idempotency_key, charge)
        return charge

    @app.get("/charges/{idempotency_key}")
    async def get_charge(idempotency_key: str) -> dict[str, Any]:
        """A charge as the processor's ledger has it: approved, declined or refunded."""
        charge = charges.get(idempotency_key)
        if charge is None:
            raise HTTPException(404, "no charge for this key")
        return charge

    @app.get("/knobs")
    async def get_knobs() -> Knobs:
        knobs: Knobs = state["knobs"]
        return knobs

    @app.put("/knobs")
    async def set_knobs(knobs: Knobs) -> Knobs:
        state["knobs"] = knobs
        return knobs

    @app.post("/notifications", status_code=202)
    async def notify(message: dict[str, Any]) -> dict[str, int]:
        """A stand-in for the customers' message channel (the notify binding) where there is no
        real one, as in the chart's default install: it keeps the last 1000 messages."""
        state["notifications"] = [*state["notifications"][-999:], message]
        return {"received": len(state["notifications"])}

    @app.get("/notifications")
    async def notifications() -> list[dict[str, Any]]:
        return list(state["notifications"])

    @app.get("/stats")
    async def stats() -> dict[str, int]:
        return {"calls": state["calls"], "charges": len(charges), "notifications": len(state["notifications"])}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
