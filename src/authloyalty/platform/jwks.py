"""sso's public keys as seen from another process: a cached JWKS, refetched when needed."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx
import jwt

from authloyalty.platform.tokens import PublicKey, VerificationKey

log = logging.getLogger(__name__)


class JwksKeyProvider:
    """Serves keys from memory; an unknown ``kid`` triggers a rate-limited refetch.

    Rotation needs no restart: a token signed by a new key makes us fetch the JWKS again, and
    a periodic refresh drops keys sso has retired.
    """

    def __init__(self, url: str, *, min_refresh_seconds: float = 5.0,
                 timeout_seconds: float = 2.0) -> None:
        self._url = url
        self._min_refresh = min_refresh_seconds
        self._timeout = timeout_seconds
        self._keys: dict[str, VerificationKey] = {}
        self._last_fetch = float("-inf")
        self._lock = asyncio.Lock()

    def verification_key(self, kid: str) -> VerificationKey | None:
        """The cached key for ``kid``."""
        return self._keys.get(kid)

    @property
    def kids(self) -> list[str]:
        """Key ids currently cached."""
        return list(self._keys)

    async def refresh(self) -> None:
        """Fetch the JWKS now; raises on network or format errors."""
        async with httpx.AsyncClient(timeout=self._timeout) as client:
            response = await client.get(self._url)
            response.raise_for_status()
            document = response.json()
        self._last_fetch = time.monotonic()
        self._keys = _parse(document)
        log.info("loaded %d signing keys from %s", len(self._keys), self._url)

    async def knows(self, kid: str) -> bool:
        """True if ``kid`` is known, refetching first when allowed by the rate limit."""
        if kid in self._keys:
            return True
        async with self._lock:
            if kid in self._keys:
                return True
            if time.monotonic() - self._last_fetch < self._min_refresh:
                return False
            try:
                await self.refresh()
            except (httpx.HTTPError, ValueError) as exc:
                self._last_fetch = time.monotonic()
                log.warning("cannot fetch JWKS from %s: %s", self._url, exc)
                return False
        return kid in self._keys

    async def refresh_forever(self, interval_seconds: float = 300.0) -> None:
        """Keep the cache fresh (picks up retired keys); failures are logged and retried."""
        while True:
            try:
                await self.refresh()
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("cannot fetch JWKS from %s: %s", self._url, exc)
                await asyncio.sleep(min(interval_seconds, 5.0))
                continue
            await asyncio.sleep(interval_seconds)


def _parse(document: Any) -> dict[str, VerificationKey]:
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document")
    keys: dict[str, VerificationKey] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        kid, alg = entry.get("kid"), entry.get("alg")
        if not isinstance(kid, str) or alg not in ("EdDSA", "ES256", "RS256"):
            continue
        try:
            key: PublicKey = jwt.PyJWK(entry, algorithm=alg).key
        except jwt.PyJWTError:
            log.warning("skipping unusable JWK %s", kid)
            continue
        keys[kid] = VerificationKey(kid=kid, algorithm=alg, key=key)
    return keys
