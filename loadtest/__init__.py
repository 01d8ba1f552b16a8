"""The lunch-rush load test (docs/loadtest.md): ``locustfile.py`` is what locust runs; ``lunch``,
``gate`` and ``plot`` are plain modules (no locust import, so the test suite can use them); ``run``
starts a platform when no host is given, runs locust in a subprocess and stops the platform."""
