"""API keys: who a caller is and which plan they are on, when AUTH=keys.

A key is `dsk_` + 43 random URL-safe characters (256 bits), shown once when it is made. Only
its SHA-256 is stored, as a Store document (kind `apikey`) whose id *is* that hash: a lookup
hashes the presented key and reads that one document, so it costs one store read (SQLite: in
memory; Redis: one round trip, which every process answers alike), and the stored hash is
compared with `hmac.compare_digest`. A SHA-256 of a 256-bit random key needs no salt or slow
hash: there is nothing to guess that is smaller than the key itself.

A process may reuse a key it has checked for KEY_CACHE_S (default 1 s; on Redis a lookup is a
round trip, about 0.7 ms, against microseconds from the cache). A revocation (the document
deleted) refuses the key's next request on the process that revoked it, and on every other
process within KEY_CACHE_S; with KEY_CACHE_S=0 every request reads the store, and the bound is
the next request everywhere. Unknown keys are never cached.

The plan is a string the quota table maps (today `free` and `premium`, the `Role`s); a new
plan is a new Role with its row in that table, and then keys can name it.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from typing import Annotated, Final

import msgspec
from aiohttp import web
from msgspec import Meta

from .errors import NotFound, ValidationFailed
from .models import Role, iso_ms
from .store.base import Store, StoreUnavailable, VersionConflict

KIND: Final = "apikey"
KEY_PREFIX: Final = "dsk_"
MAX_KEY: Final = 256  # what a lookup accepts: longer is refused without hashing
SHOWN: Final = 8  # characters of the key kept to recognise it in a listing (`dsk_ab12…`)
LAST_USED_EVERY_S: Final = 60.0  # last_used_at is written at most this often per key
MAX_CACHED: Final = 10_000  # checked keys remembered per process (the oldest forgotten first)
PLANS: Final = tuple(role.value for role in Role)

UserId = Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")]
KeyName = Annotated[str, Meta(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")]


class CreateKey(msgspec.Struct, forbid_unknown_fields=True):
    """POST /v1/keys"""

    user_id: UserId
    plan: str
    name: KeyName | None = None


class KeyInfo(msgspec.Struct, omit_defaults=False):
    """A key as listed: never the secret, only its first characters to recognise it."""

    id: str
    prefix: str
    user_id: str
    plan: str
    name: str | None
    created_at: str
    last_used_at: str | None = None


class KeyList(msgspec.Struct):
    """GET /v1/keys"""

    keys: list[KeyInfo]


class NewKey(msgspec.Struct):
    """The answer to POST /v1/keys: the only time `key` is ever shown."""

    id: str
    key: str
    prefix: str
    user_id: str
    plan: str
    name: str | None
    created_at: str
    last_used_at: str | None = None


class StoredKey(msgspec.Struct):
    """The document: the key's SHA-256 (hex) and what it grants."""

    id: str
    sha256: str
    prefix: str
    user_id: str
    plan: str
    name: str | None
    created_at: str
    last_used_at: str | None = None
    last_used_ts: float = 0.0

    def info(self) -> KeyInfo:
        return KeyInfo(
            self.id,
            self.prefix,
            self.user_id,
            self.plan,
            self.name,
            self.created_at,
            self.last_used_at,
        )


class Identity(msgspec.Struct, frozen=True):
    """Who a request's API key says the caller is."""

    user_id: str
    plan: str
    key_id: str

    @property
    def role(self) -> Role:
        return Role(self.plan)


_decode = msgspec.json.Decoder(StoredKey).decode
_encode = msgspec.json.Encoder().encode


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def plausible(key: str) -> bool:
    """Shaped like a key: worth a lookup (anything else is refused without one)."""
    return key.startswith(KEY_PREFIX) and len(key) <= MAX_KEY and key.isascii()


class KeyRing:
    """Makes, lists, revokes and checks API keys, all through the Store's documents."""

    def __init__(
        self,
        store: Store,
        cache_s: float = 0.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.cache_s = cache_s
        self._clock = clock
        self._monotonic = monotonic
        self._cache: dict[str, tuple[float, Identity]] = {}  # sha256 -> (until, identity)
        # revocations made here: a lookup that was reading while one ran doesn't cache its read
        self._revocations = 0

    async def create(self, request: CreateKey) -> NewKey:
        if request.plan not in PLANS:
            raise ValidationFailed(f"plan must be one of {', '.join(PLANS)}", field="plan")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        stored = StoredKey(
            id="key_" + secrets.token_hex(8),
            sha256=digest(key),
            prefix=key[:SHOWN] + "…",
            user_id=request.user_id,
            plan=request.plan,
            name=request.name,
            created_at=iso_ms(self._clock()),
        )
        await self.store.put_doc(KIND, stored.sha256, _encode(stored), expect=0)
        return NewKey(
            stored.id,
            key,
            stored.prefix,
            stored.user_id,
            stored.plan,
            stored.name,
            stored.created_at,
        )

    async def list(self) -> list[KeyInfo]:
        keys = [_decode(doc.body).info() for doc in await self.store.docs(KIND)]
        return sorted(keys, key=lambda k: (k.created_at, k.id))

    async def revoke(self, key_id: str) -> KeyInfo:
        """Delete the key's document: its next request, on any process, is refused."""
        for doc in await self.store.docs(KIND):
            stored = _decode(doc.body)
            if stored.id == key_id:
                await self.store.put_doc(KIND, doc.id, None)
                self._cache.pop(doc.id, None)
                self._revocations += 1
                return stored.info()
        raise NotFound(f"no API key {key_id}")

    async def lookup(self, key: str) -> Identity | None:
        """The identity a presented key grants; None for an unknown or revoked one."""
        if not plausible(key):
            return None
        hashed = digest(key)
        cached = self._cache.get(hashed)
        if cached is not None:
            if cached[0] > self._monotonic():
                return cached[1]
            del self._cache[hashed]
        # the cache counts from before the read (a slow read doesn't stretch KEY_CACHE_S), and a
        # read that a revocation here overlapped is not cached at all (it may predate it)
        read_at, revocations = self._monotonic(), self._revocations
        doc = await self.store.get_doc(KIND, hashed)
        if doc is None:
            return None
        stored = _decode(doc.body)
        if not hmac.compare_digest(stored.sha256.encode(), hashed.encode()):
            return None
        now = self._clock()
        if now - stored.last_used_ts >= LAST_USED_EVERY_S:
            stored.last_used_ts = now
            stored.last_used_at = iso_ms(now)
            # on its version: a revocation in between is never undone by this write; a failure
            # is only bookkeeping lost (the key was valid when read)
            with contextlib.suppress(VersionConflict, StoreUnavailable):
                await self.store.put_doc(KIND, doc.id, _encode(stored), expect=doc.version)
        identity = Identity(stored.user_id, stored.plan, stored.id)
        if self.cache_s > 0 and revocations == self._revocations:
            self._cache[hashed] = (read_at + self.cache_s, identity)
            if len(self._cache) > MAX_CACHED:
                del self._cache[next(iter(self._cache))]
        return identity


KEYS = web.AppKey("keys", KeyRing)
