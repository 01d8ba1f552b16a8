"""``python -m services.tools.paygate --port 8100 [--ledger FILE]``: the payment-gateway simulator
on its own (with a ledger file, its charges survive a restart)."""

import argparse
from pathlib import Path

import uvicorn

from services.tools.paygate.app import create_app

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, default=8100)
parser.add_argument("--ledger", type=Path, help="keep the charges in this SQLite file (default: in memory)")
args = parser.parse_args()
uvicorn.run(create_app(args.ledger), host=args.host, port=args.port, log_level="warning")
