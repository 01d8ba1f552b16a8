"""The order service as its own process: ``BAEDAL_RUNTIME=dapr uvicorn services.order.app:app``."""

from services.dapr_host import create_service_app

app = create_service_app("order")
