"""One endpoint's delivery log: the last WEBHOOK_LOG deliveries and their attempts
(GET .../deliveries), kept in memory by the endpoint's worker and written behind to
`webhook_log/{id}` (every LOG_FLUSH_EVERY changes, and before the worker idles or stops)."""

from __future__ import annotations

from typing import Final

from ..models import iso_ms
from ..store import Store, VersionConflict
from .documents import KIND_LOG, Attempt, Delivery, DeliveryLog, Item, _decode_log, _encode

LOG_FLUSH_EVERY: Final = 32  # deliveries between writes of the delivery log


class EndpointLog:
    """The delivery log of one endpoint this process sends for, held by its worker."""

    def __init__(self, store: Store, endpoint_id: str, size: int, attempts: int) -> None:
        self.store = store
        self.id = endpoint_id
        self.size = size  # deliveries kept
        self.attempts = attempts  # attempts kept per delivery
        self.book: DeliveryLog | None = None
        self.version = 0
        self.dirty = 0

    def entry(self, item: Item) -> Delivery:
        book = self.book or DeliveryLog()
        self.book = book
        for entry in reversed(book.deliveries):
            if entry.id == item.id:
                return entry
        entry = Delivery(item.id, item.event_type, item.seq, item.job_id, "pending", [], None)
        book.deliveries.append(entry)
        if len(book.deliveries) > self.size:
            del book.deliveries[: len(book.deliveries) - self.size]
        return entry

    def record(self, item: Item, attempt: Attempt, status: str, next_at: float | None) -> bool:
        """An attempt and where the delivery stands; True when a write of the log is due."""
        entry = self.entry(item)
        entry.attempts.append(attempt)
        del entry.attempts[: -self.attempts]
        entry.status = status
        entry.next_attempt_at = None if next_at is None else iso_ms(next_at)
        self.dirty += 1
        return self.dirty >= LOG_FLUSH_EVERY

    def pending(self, item: Item) -> None:
        entry = self.entry(item)
        entry.status = "pending"
        entry.next_attempt_at = None if item.next_at is None else iso_ms(item.next_at)
        self.dirty += 1

    async def load(self) -> DeliveryLog:
        if self.book is None or self.version == 0:
            doc = await self.store.get_doc(KIND_LOG, self.id)
            loaded = DeliveryLog() if doc is None else _decode_log(doc.body)
            if self.book is not None:  # entries made before the first read: keep them
                known = {d.id for d in self.book.deliveries}
                loaded.deliveries = [d for d in loaded.deliveries if d.id not in known]
                loaded.deliveries += self.book.deliveries
                del loaded.deliveries[: max(0, len(loaded.deliveries) - self.size)]
            self.book = loaded
            self.version = 0 if doc is None else doc.version
        return self.book

    async def flush(self) -> None:
        if not self.dirty:
            return
        book = await self.load()
        self.dirty = 0
        try:
            self.version = await self.store.put_doc(
                KIND_LOG, self.id, _encode(book), expect=self.version or 0
            )
        except VersionConflict:
            # an API call marked a redelivery meanwhile: merge what it wrote under ours
            doc = await self.store.get_doc(KIND_LOG, self.id)
            theirs = DeliveryLog() if doc is None else _decode_log(doc.body)
            mine = {d.id for d in book.deliveries}
            book.deliveries = [d for d in theirs.deliveries if d.id not in mine] + book.deliveries
            del book.deliveries[: max(0, len(book.deliveries) - self.size)]
            self.version = 0 if doc is None else doc.version
            self.dirty = 1
            await self.flush()
