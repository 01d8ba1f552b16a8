"""The notification service as its own process: ``BAEDAL_RUNTIME=dapr uvicorn services.notification.app:app``."""

from services.dapr_host import create_service_app

app = create_service_app("notification")
