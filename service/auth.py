"""API keys: ``Authorization: Bearer <key>`` -> tenant name.

Keys come from one setting (``PARLA_API_KEYS``): comma-separated ``tenant:key`` pairs, or
``@path`` naming a file with one pair per line (``#`` starts a comment). A pair may also be
``tenant:sha256:<64 hex digits>`` so that a file can hold digests instead of keys. Only SHA-256
digests are kept in memory; a presented key is hashed and compared with every digest with
``hmac.compare_digest``. A tenant may have several keys (rotation); a key belongs to one tenant.

With no keys configured the service refuses to start unless authentication is explicitly disabled
(``PARLA_AUTH_DISABLED=true``, for a laptop); then every caller is the tenant ``anonymous``,
except one presenting a configured key, who keeps their own tenant.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final

logger = logging.getLogger(__name__)

ANONYMOUS_TENANT: Final = "anonymous"
MIN_KEY_LENGTH: Final = 16
_TENANT_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_DIGEST_PATTERN: Final = re.compile(r"^sha256:([0-9a-fA-F]{64})$")


class ConfigurationError(Exception):
    """The service's settings cannot work (raised at startup, never per request)."""


def hash_key(key: str) -> bytes:
    """SHA-256 digest of an API key (what the registry stores)."""
    return hashlib.sha256(key.encode("utf-8")).digest()


def _parse_pair(text: str, where: str) -> tuple[str, bytes]:
    tenant, sep, key = text.partition(":")
    tenant, key = tenant.strip(), key.strip()
    if not sep or not tenant or not key:
        raise ConfigurationError(f"{where}: expected 'tenant:key', got an entry without both parts")
    if not _TENANT_PATTERN.match(tenant):
        raise ConfigurationError(f"{where}: tenant name {tenant!r} must match {_TENANT_PATTERN.pattern}")
    if tenant == ANONYMOUS_TENANT:
        raise ConfigurationError(f"{where}: {ANONYMOUS_TENANT!r} is reserved for disabled authentication")
    digest_match = _DIGEST_PATTERN.match(key)
    if digest_match:
        return tenant, bytes.fromhex(digest_match.group(1))
    if len(key) < MIN_KEY_LENGTH:
        # The message names the tenant, never the key (it would end up in logs).
        raise ConfigurationError(
            f"{where}: the key of tenant {tenant!r} is shorter than {MIN_KEY_LENGTH} characters"
        )
    return tenant, hash_key(key)


def _entries_from_setting(value: str, base_dir: Path | None) -> list[tuple[str, str]]:
    """``(where, text)`` for each entry of the setting; ``where`` locates it in error messages."""
    text = value.strip()
    if not text.startswith("@"):
        return [
            (f"PARLA_API_KEYS entry #{n}", item) for n, item in enumerate(text.split(","), 1) if item.strip()
        ]
    path = Path(text[1:].strip()).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the API key file {path}: {exc.strerror or exc}") from exc
    entries = []
    for number, line in enumerate(lines, 1):
        content = line.split("#", 1)[0].strip()
        if content:
            entries.append((f"{path}:{number}", content))
    return entries


class ApiKeyRegistry:
    """Maps API keys (by digest) to tenant names.

    Args:
        digests: ``(tenant, sha256 digest)`` pairs.
        auth_disabled: accept every caller (as ``anonymous`` unless they present a known key).

    Raises:
        ConfigurationError: no keys and authentication not disabled, or one digest given to two tenants.
    """

    def __init__(self, digests: Iterable[tuple[str, bytes]], *, auth_disabled: bool = False) -> None:
        self._entries: list[tuple[str, bytes]] = []
        owners: dict[bytes, str] = {}
        for tenant, digest in digests:
            if len(digest) != hashlib.sha256().digest_size:
                raise ConfigurationError(f"tenant {tenant!r}: a key digest must be 32 bytes of SHA-256")
            if owners.setdefault(digest, tenant) != tenant:
                raise ConfigurationError(
                    f"the same API key is configured for tenants {owners[digest]!r} and {tenant!r}"
                )
            self._entries.append((tenant, digest))
        self.auth_disabled = auth_disabled
        if not self._entries and not auth_disabled:
            raise ConfigurationError(
                "no API keys configured: set PARLA_API_KEYS ('tenant:key,...' or '@/path/to/keys') "
                "or, for local development only, PARLA_AUTH_DISABLED=true"
            )
        if auth_disabled:
            logger.warning(
                "!!! AUTHENTICATION IS DISABLED (PARLA_AUTH_DISABLED=true): anyone who can reach this "
                "API can submit jobs as %r. Never run like this in production. !!!",
                ANONYMOUS_TENANT,
            )

    @classmethod
    def from_setting(
        cls, value: str | None, *, base_dir: Path | None = None, auth_disabled: bool = False
    ) -> ApiKeyRegistry:
        """Parse ``PARLA_API_KEYS``: ``tenant:key`` pairs, comma separated, or ``@path`` to a file of them.

        Args:
            value: the setting; None or blank means no keys.
            base_dir: where a relative ``@path`` is resolved (the working directory when None).
            auth_disabled: the ``PARLA_AUTH_DISABLED`` setting.
        """
        entries = _entries_from_setting(value, base_dir) if value and value.strip() else []
        return cls((_parse_pair(text, where) for where, text in entries), auth_disabled=auth_disabled)

    @property
    def tenants(self) -> frozenset[str]:
        """The configured tenant names."""
        return frozenset(tenant for tenant, _ in self._entries)

    def tenant_for_key(self, key: str) -> str | None:
        """The tenant owning ``key``, or None. Compares against every digest (no early exit)."""
        presented = hash_key(key)
        found: str | None = None
        for tenant, digest in self._entries:
            if hmac.compare_digest(presented, digest):
                found = tenant
        return found

    def authenticate(self, authorization_header: str | None) -> str | None:
        """The tenant for an ``Authorization`` header value, or None (the API answers 401).

        Only the ``Bearer`` scheme is accepted (case-insensitive). With authentication disabled the
        answer is never None: a known key gives its tenant, anything else ``anonymous``.
        """
        tenant = None
        if authorization_header:
            scheme, _, credentials = authorization_header.strip().partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                tenant = self.tenant_for_key(credentials.strip())
        if tenant is None and self.auth_disabled:
            return ANONYMOUS_TENANT
        return tenant


def tenant_dependency(registry: ApiKeyRegistry) -> Callable[..., str]:
    """A FastAPI dependency returning the caller's tenant or raising 401 with ``WWW-Authenticate``.

    The error body is the house error shape; wire it as
    ``Tenant = Annotated[str, Depends(tenant_dependency(registry))]``.
    """
    from fastapi import Header, HTTPException

    def current_tenant(authorization: str | None = Header(default=None)) -> str:
        tenant = registry.authenticate(authorization)
        if tenant is None:
            raise HTTPException(
                status_code=401,
                detail={"error": {"code": "unauthorized", "message": "missing or invalid API key"}},
                headers={"WWW-Authenticate": "Bearer"},
            )
        return tenant

    return current_tenant
