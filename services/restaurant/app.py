"""The restaurant service as its own process: ``BAEDAL_RUNTIME=dapr uvicorn services.restaurant.app:app``."""

from services.dapr_host import create_service_app

app = create_service_app("restaurant")
