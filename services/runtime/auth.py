"""JWT bearer auth (HS256, PyJWT) with a signing secret generated once per data dir."""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import jwt

from services.runtime.errors import ApiError
from services.runtime.failures import CouldNotRun

SECRET_FILE = "jwt-secret"
VERIFIED_CACHE_SIZE = 10_000
SAFE_SUBJECT = r"[^\x00-\x1f\x7f/]{1,128}"
ALGORITHM = "HS256"


class Role(StrEnum):
    CUSTOMER = "customer"
    OWNER = "owner"
    RIDER = "rider"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    subject: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


class MissingSecret(CouldNotRun):
    """A client found no signing secret: a new one would only sign tokens the platform rejects."""


def load_secret(data_dir: Path) -> str:
    """The signing secret of an existing data dir, for clients of a running platform."""
    path = data_dir / SECRET_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise MissingSecret(
            f"no signing secret {path}: give the data dir of the running platform (--data-dir or BAEDAL_DATA_DIR)"
        ) from None


def load_or_create_secret(data_dir: Path) -> str:
    """The data dir's signing secret; created (mode 0600) on the platform's first start. Only the
    platform, which owns the data dir, may create it; its clients use :func:`load_secret`."""
    path = data_dir / SECRET_FILE
    if path.exists():
        return load_secret(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret)
    return secret


class TokenIssuer:
    def __init__(self, secret: str, ttl_s: int = 12 * 3600) -> None:
        self._secret = secret
        self._ttl_s = ttl_s
        self._verified: dict[str, tuple[Principal, float]] = {}

    def issue(self, role: Role | str, subject: str, ttl_s: int | None = None) -> str:
        now = int(time.time())
        lifetime = self._ttl_s if ttl_s is None else ttl_s
        if lifetime <= 0:
            raise ValueError("a token lifetime must be positive")
        claims = {"sub": subject, "role": Role(role).value, "iat": now, "exp": now + lifetime}
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def verify(self, token: str) -> Principal:
        """A cached verification (a token is re-sent with every request; HS256 costs ~65 µs);
        the expiry is still checked on every use."""
        cached = self._verified.get(token)
        if cached is not None and cached[1] > time.time():
            return cached[0]
        principal, expires = self._decode(token)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = (principal, expires)
        return principal

    def _decode(self, token: str) -> tuple[Principal, float]:
        try:
            claims = jwt.decode(token, self._secret, algorithms=[ALGORITHM], options={"require": ["sub", "exp"]})
            subject = str(claims["sub"])
            if not re.fullmatch(SAFE_SUBJECT, subject):
                raise ValueError("the subject must be 1-128 printable characters without '/'")
            return Principal(subject, Role(str(claims.get("role")))), float(claims["exp"])
        except (jwt.PyJWTError, ValueError) as exc:
            raise ApiError(401, "UNAUTHORIZED", f"invalid bearer token: {exc}") from exc


def admin_tokens(data_dir: Path, subject: str, ttl_s: int | None = None) -> Callable[[], str]:
    """Admin tokens for a client of the platform whose data dir this is (its secret must exist)."""
    issuer = TokenIssuer(load_secret(data_dir))
    return lambda: issuer.issue(Role.ADMIN, subject, ttl_s)


def require_role(principal: Principal, *roles: Role) -> None:
    if principal.role not in roles and not principal.is_admin:
        raise ApiError(403, "FORBIDDEN", f"role {principal.role.value} may not do this")


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise ApiError(403, "FORBIDDEN", "admin only")


def require_self(principal: Principal, customer_id: str) -> None:
    """Customers act on their own data; admin on anyone's."""
    if principal.is_admin:
        return
    if principal.role is not Role.CUSTOMER or principal.subject != customer_id:
        raise ApiError(403, "FORBIDDEN", "you may only act on your own account")
