"""A bounded, ordered store of messages that stay until the broker acknowledges them.

The MQTT client library cannot be trusted with this: aiomqtt's `publish` never completes once the
connection drops, and paho only resends in-flight messages when the same client object
reconnects. So every message lives here from `put` until `ack`; each new connection starts
`begin_connection`, which queues everything still unacknowledged, oldest first, for (re)sending.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Literal

Policy = Literal["drop_oldest", "block"]
POLICIES: tuple[Policy, ...] = ("drop_oldest", "block")


@dataclass(slots=True)
class Message:
    topic: str
    payload: bytes
    qos: int
    stream: str
    enqueued_ns: int = field(default_factory=time.monotonic_ns)
    attempts: int = 0


class Outbox:
    """Messages in arrival order, bounded to `capacity`, with an explicit policy when full.

    `drop_oldest`: `put` never waits; the oldest message is discarded and counted in `dropped`
    and `dropped_by_stream` (if it was in flight it may still reach the broker, but it will not be
    resent). `block`: `put` waits until an acknowledgement makes room; `blocked` counts the waits.
    """

    def __init__(self, capacity: int, policy: Policy) -> None:
        if capacity < 1:
            raise ValueError(f"outbox capacity must be >= 1, got {capacity}")
        if policy not in POLICIES:
            raise ValueError(f"outbox policy must be one of {POLICIES}, got {policy!r}")
        self.capacity = capacity
        self.policy: Policy = policy
        self._messages: dict[int, Message] = {}  # insertion-ordered: oldest first
        self._unsent: deque[int] = deque()
        self._next_id = 0
        self._changed = asyncio.Condition()
        self.dropped = 0
        self.dropped_by_stream: Counter[str] = Counter()
        self.blocked = 0

    def __len__(self) -> int:
        return len(self._messages)

    async def put(self, message: Message) -> None:
        async with self._changed:
            if len(self._messages) >= self.capacity:
                if self.policy == "block":
                    self.blocked += 1
                    self._changed.notify_all()
                    await self._changed.wait_for(lambda: len(self._messages) < self.capacity)
                else:
                    oldest = next(iter(self._messages))
                    dropped = self._messages.pop(oldest)
                    self.dropped += 1
                    self.dropped_by_stream[dropped.stream] += 1
            message_id = self._next_id
            self._next_id += 1
            self._messages[message_id] = message
            self._unsent.append(message_id)
            self._changed.notify_all()

    def begin_connection(self) -> None:
        """Queue every unacknowledged message for sending on a fresh connection, oldest first."""
        self._unsent = deque(self._messages)

    async def next_unsent(self) -> tuple[int, Message]:
        """Wait for the next message to send on this connection."""
        async with self._changed:
            while True:
                while self._unsent:
                    message_id = self._unsent.popleft()
                    message = self._messages.get(message_id)
                    if message is not None:  # else dropped while waiting
                        return message_id, message
                await self._changed.wait()

    async def ack(self, message_id: int) -> Message | None:
        """Forget an acknowledged message; None if the drop policy already discarded it."""
        async with self._changed:
            message = self._messages.pop(message_id, None)
            self._changed.notify_all()
            return message

    async def wait_until(self, predicate) -> None:
        """Wait until `predicate(self)` holds; re-checked on every change."""
        async with self._changed:
            await self._changed.wait_for(lambda: predicate(self))
