"""``python -m services`` is the ``baedal`` command."""

from services.entrypoints.cli import app

app()
