"""The Dapr runtime: the same ports as the embedded runtime, implemented on a Dapr sidecar.

Each service runs as its own process next to its own sidecar (``BAEDAL_RUNTIME=dapr uvicorn
services.entrypoints.apps.<name>:app``); docs/dapr.md maps every port to its Dapr building block.
"""
