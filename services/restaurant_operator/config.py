"""How the operator reaches the platform: environment (``BAEDAL_OPERATOR_*``, ``BAEDAL_RUNTIME``,
``BAEDAL_DATA_DIR``) for ``kopf run``, or the flags of ``baedal operator``."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OperatorConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BAEDAL_OPERATOR_")

    # Which publish adapter carries catalog events (see publisher.ADAPTERS).
    runtime: str = Field("embedded", validation_alias=AliasChoices("runtime", "BAEDAL_RUNTIME"))
    # embedded: the running platform and how to authenticate as admin there.
    url: str = "http://127.0.0.1:8000"
    token: str | None = None
    data_dir: Path = Field(Path(".baedal"), validation_alias=AliasChoices("data_dir", "BAEDAL_DATA_DIR"))
    # dapr: the pub/sub component of the operator's sidecar (components/pubsub.yaml).
    dapr_pubsub: str = Field("pubsub", validation_alias=AliasChoices("dapr_pubsub", "BAEDAL_DAPR_PUBSUB"))
    request_timeout_s: float = Field(10.0, gt=0)
    # A failed publish is retried after base, 2×base, 4×base … seconds, at most cap.
    retry_base_s: float = Field(1.0, gt=0)
    retry_cap_s: float = Field(60.0, gt=0)

    def retry_delay(self, retry: int) -> float:
        """The delay before retry number ``retry + 1`` (kopf counts ``retry`` from 0)."""
        return float(min(self.retry_cap_s, self.retry_base_s * 2.0**retry))
