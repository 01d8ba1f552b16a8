"""The restaurant service as its own process, behind its Dapr sidecar:
``BAEDAL_RUNTIME=dapr uvicorn services.entrypoints.apps.restaurant:app``."""

from services.entrypoints.dapr_host import create_service_app

app = create_service_app("restaurant")
