"""Failures that stop a command or a process before it can do its job: no signing secret, a
platform that refuses the token, no cluster, a sidecar that never answers. Their message is one
line a person can act on; the CLI prints it and exits 2 ("could not run")."""

from __future__ import annotations

import os

import httpx


class CouldNotRun(Exception):
    """Something outside this program (configuration, network, a peer) keeps it from running."""


def response_detail(response: httpx.Response) -> str:
    """What an error response says: the problem+json ``detail``, else the start of the body."""
    try:
        return str(response.json().get("detail") or response.text)
    except (ValueError, AttributeError):  # not JSON, or JSON that is not an object
        return response.text[:200]


def raise_if_unusable(response: httpx.Response) -> httpx.Response:
    """The response, unless the platform refused the token (401, 403) or failed (5xx): then
    :class:`httpx.HTTPStatusError`, since no other request would fare better. Other statuses are
    answers about this request, for the caller to read."""
    if response.status_code in (401, 403) or response.is_server_error:
        response.raise_for_status()
    return response


def transport_failure(exc: httpx.TransportError) -> str:
    """Why a request got no answer: for a refused or reset connection the OS's words, which httpx
    hides behind "All connection attempts failed"."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionError) and cause.errno:
            return os.strerror(cause.errno)
        cause = cause.__cause__ or cause.__context__
    return str(exc) or type(exc).__name__
