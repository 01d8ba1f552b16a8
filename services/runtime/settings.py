"""Process settings, read from the environment (prefix ``BAEDAL_``) and CLI flags."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[2]


class ChaosSettings(BaseSettings):
    """Fault injection for the embedded dispatcher (tests and drills only)."""

    model_config = SettingsConfigDict(env_prefix="BAEDAL_CHAOS_")

    duplicate_rate: float = Field(0.0, ge=0, le=1)
    max_delay_s: float = Field(0.0, ge=0)
    failure_rate: float = Field(0.0, ge=0, lt=1)
    shuffle: bool = False

    @property
    def enabled(self) -> bool:
        return bool(self.duplicate_rate or self.max_delay_s or self.failure_rate or self.shuffle)


class DaprSettings(BaseSettings):
    """Names of the Dapr components a service uses (components/*.yaml declares them)."""

    model_config = SettingsConfigDict(env_prefix="BAEDAL_DAPR_")

    pubsub: str = "pubsub"
    # The service's own state store; "{service}" becomes the service name.
    state_store: str = "{service}-state"
    notify_binding: str = "notify"
    paygate_binding: str = "paygate"
    # How long inbox entries and outbox event keys live in the state store.
    retention_s: int = Field(7 * 86400, ge=60)
    # How long a service waits at start for its sidecar to answer before it exits.
    sidecar_timeout_s: float = Field(60.0, gt=0)

    def store_of(self, service: str) -> str:
        return self.state_store.format(service=service)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BAEDAL_")

    # embedded: every service in one process (``baedal up``); dapr: one service per process, each
    # behind its own Dapr sidecar (``uvicorn services.entrypoints.apps.<name>:app``).
    runtime: Literal["embedded", "dapr"] = "embedded"
    data_dir: Path = Path(".baedal")
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    # PostgreSQL: every service gets schema f"{schema_prefix}{service}" in the given database.
    schema_prefix: str = "baedal_"
    demo_manifests: Path = REPO_ROOT / "operator" / "examples"
    load_demo: bool = True
    # Dispatcher tuning.
    max_attempts: int = Field(10, ge=1)
    backoff_base_s: float = Field(0.05, gt=0)
    backoff_cap_s: float = Field(30.0, gt=0)
    batch_size: int = Field(128, ge=1)
    inbox_retention_s: float = Field(3600.0, gt=0)
    # SQLite: NORMAL survives kill -9 (the WAL is in the OS page cache); FULL also survives power loss.
    # baedal up: 1 process, or 2 (the engine too; entrypoints/engine.py); unset: 2 on 2+ cores.
    processes: int | None = Field(None, ge=1, le=2)
    sqlite_synchronous: str = Field("NORMAL", pattern="^(OFF|NORMAL|FULL|EXTRA)$")
    max_body_bytes: int = 64 * 1024
    # The outbound notification channel (the seeds' KakaoTalk message): POSTed here when set.
    notify_webhook: str | None = None
    # The external card gateway (``baedal up`` starts the simulator there unless told otherwise).
    paygate_url: str = "http://127.0.0.1:8100"
    paygate_timeout_s: float = Field(1.0, gt=0)
    paygate_failure_threshold: int = Field(5, ge=1)
    paygate_recovery_s: float = Field(5.0, gt=0)
    token_ttl_s: int = 12 * 3600
    # The token signing secret (a Kubernetes Secret in the cluster); else one per data dir.
    jwt_secret: SecretStr | None = None
    chaos: ChaosSettings = Field(default_factory=lambda: ChaosSettings())
    dapr: DaprSettings = Field(default_factory=lambda: DaprSettings())
