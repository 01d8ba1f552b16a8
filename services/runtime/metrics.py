"""Metrics both runtimes record (served at ``/metrics``)."""

from prometheus_client import Counter

HANDLED = Counter("baedal_events_handled_total", "Events handled", ["service", "consumer", "outcome"])
