"""``python -m services`` is the ``baedal`` command."""

from services.cli import app

app()
