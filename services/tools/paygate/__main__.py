"""``python -m services.tools.paygate --port 8100``: the payment-gateway simulator on its own."""

import argparse

import uvicorn

from services.tools.paygate.app import create_app

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, default=8100)
args = parser.parse_args()
uvicorn.run(create_app(), host=args.host, port=args.port, log_level="warning")
