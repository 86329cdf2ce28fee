"""Leases on a shared store: which process sends an endpoint's deliveries.

A `webhook_lease/{id}` document (holder, until) written compare-and-set. The engine takes the
lease before it starts an endpoint's worker, renews it every LEASE_S/3 and releases it when it
stops; a lease that ran out may be taken by another process.
"""

from __future__ import annotations

import contextlib
import secrets

import msgspec

from ..store import Store, VersionConflict
from .documents import KIND_LEASE, Lease, _encode


class Leases:
    """This process's side of the endpoints' leases (real time: about a process being alive)."""

    def __init__(self, store: Store, lease_s: float) -> None:
        self.store = store
        self.lease_s = lease_s
        self.holder = secrets.token_hex(8)  # this process, as a lease holder

    async def take(self, endpoint_id: str) -> bool:
        """Take the lease if nobody else holds one that runs; False if another process does."""
        now = (
            self.store.wall()
        )  # real time, as all processes read it: a lease is about one being alive
        doc = await self.store.get_doc(KIND_LEASE, endpoint_id)
        lease = None if doc is None else msgspec.json.decode(doc.body, type=Lease)
        if lease is not None and lease.holder != self.holder and lease.until > now:
            return False
        body = _encode(Lease(self.holder, now + self.lease_s))
        try:
            await self.store.put_doc(
                KIND_LEASE, endpoint_id, body, 0 if doc is None else doc.version
            )
        except VersionConflict:
            return False  # another process took it first
        return True

    async def renew(self, endpoint_id: str) -> bool:
        doc = await self.store.get_doc(KIND_LEASE, endpoint_id)
        if doc is None:
            return False
        lease = msgspec.json.decode(doc.body, type=Lease)
        if lease.holder != self.holder:
            return False
        body = _encode(Lease(self.holder, self.store.wall() + self.lease_s))
        try:
            await self.store.put_doc(KIND_LEASE, endpoint_id, body, doc.version)
        except VersionConflict:
            return False
        return True

    async def release(self, endpoint_id: str) -> None:
        doc = await self.store.get_doc(KIND_LEASE, endpoint_id)
        if doc is not None and msgspec.json.decode(doc.body, type=Lease).holder == self.holder:
            with contextlib.suppress(VersionConflict):
                await self.store.put_doc(KIND_LEASE, endpoint_id, None, doc.version)
