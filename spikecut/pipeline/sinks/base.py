"""The sink contract and the local sinks: stdout and JSON-lines files, plus fan-out to several.

A sink is an async context manager (open on enter, flush and close on exit) with two coroutines:
`publish(decision)` stamps the decision's latency (see `spikecut.pipeline.decision`), delivers or
queues it and returns the stamped decision; `publish_stats(stats)` sends a periodic `Stats`
record where the sink has a place for it (MQTT). Local sinks hold decisions only, one JSON object
per line, so a file or a pipe never mixes two schemas; their `publish_stats` does nothing.
"""

from __future__ import annotations

import contextlib
import sys
from collections import Counter
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import IO, Protocol, runtime_checkable

from spikecut.errors import SinkError
from spikecut.pipeline.decision import Decision, Stats


@dataclass(slots=True)
class SinkCounters:
    """What a sink did so far. Local sinks only count `published`; MQTT fills in the rest."""

    published: int = 0  # decisions written (local) or acknowledged by the broker (MQTT)
    pending: int = 0  # decisions waiting in the outbox, sent or not
    dropped: int = 0  # decisions discarded by the drop_oldest policy
    dropped_by_stream: Counter[str] = field(default_factory=Counter)
    blocked: int = 0  # publish calls that had to wait under the block policy
    sent: int = 0  # PUBLISH packets handed to the MQTT client, first sends and resends
    resent: int = 0  # decisions sent again on a new connection (not acknowledged before)
    connects: int = 0
    disconnects: int = 0  # connections lost (not counting our own clean disconnect)
    stats_published: int = 0
    stats_skipped: int = 0  # stats replaced by a newer one before they could be sent
    undelivered: int = 0  # decisions still unacknowledged when the sink closed
    outbox_wait_ms_p50: float | None = None  # publish -> PUBACK, recent decisions
    outbox_wait_ms_p99: float | None = None


@runtime_checkable
class Sink(Protocol):
    name: str  # where decisions go, credentials redacted

    @property
    def counters(self) -> SinkCounters: ...

    async def __aenter__(self) -> Sink: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    async def publish(self, decision: Decision) -> Decision: ...

    async def publish_stats(self, stats: Stats) -> None: ...


class _LineSink:
    """JSON lines to a text stream, flushed after every decision."""

    name: str

    def __init__(self) -> None:
        self._out: IO[str] | None = None
        self.counters = SinkCounters()

    async def publish(self, decision: Decision) -> Decision:
        decision = decision.stamped()
        if self._out is None:
            raise SinkError(f"{self.name}: publish on a sink that is not open")
        try:
            self._out.write(decision.to_json() + "\n")
            self._out.flush()
        except OSError as exc:
            raise SinkError(f"{self.name}: cannot write decision: {exc}") from exc
        self.counters.published += 1
        return decision

    async def publish_stats(self, stats: Stats) -> None:
        """Local sinks carry decisions only (one schema per file); stats go to MQTT."""


class StdoutSink(_LineSink):
    """Decisions as JSON lines on stdout (or `stream`), the default sink."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        super().__init__()
        self._stream = stream
        self.name = "stdout"

    async def __aenter__(self) -> StdoutSink:
        self._out = sys.stdout if self._stream is None else self._stream
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        out, self._out = self._out, None
        if out is not None:
            with contextlib.suppress(OSError):  # reader went away: nothing left to tell it
                out.flush()


class JsonlSink(_LineSink):
    """Decisions appended to a JSON-lines file, flushed after each one.

    A file whose last line was cut short (a crash mid-write) gets a newline first, so the cut
    line stays one bad line instead of corrupting the next decision too.
    """

    def __init__(self, path: str | PathLike[str]) -> None:
        super().__init__()
        self.path = Path(path)
        self.name = str(self.path)

    async def __aenter__(self) -> JsonlSink:
        try:
            needs_newline = False
            if self.path.is_file() and self.path.stat().st_size > 0:
                with self.path.open("rb") as existing:
                    existing.seek(-1, 2)
                    needs_newline = existing.read(1) != b"\n"
            self._out = self.path.open("a", encoding="utf-8")
            if needs_newline:
                self._out.write("\n")
        except OSError as exc:
            raise SinkError(f"{self.path}: cannot open for appending decisions: {exc}") from exc
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        out, self._out = self._out, None
        if out is not None:
            out.close()


class FanoutSink:
    """Publishes every decision to several sinks, in order.

    The latency is stamped once, so all sinks carry the same decision. A sink that fails does not
    stop the others: every sink gets the decision, then the first error is raised.
    """

    def __init__(self, *sinks: Sink) -> None:
        if not sinks:
            raise ValueError("FanoutSink needs at least one sink")
        self.sinks = sinks
        self.name = " + ".join(sink.name for sink in sinks)
        self._stack: contextlib.AsyncExitStack | None = None

    @property
    def counters(self) -> SinkCounters:
        """Counts summed over the sinks, outbox waits of the slowest; `sinks[i].counters` each."""
        total = SinkCounters()
        for counters in (sink.counters for sink in self.sinks):
            for name in SinkCounters.__slots__:
                mine, theirs = getattr(total, name), getattr(counters, name)
                if name.startswith("outbox_wait_ms"):
                    waits = [w for w in (mine, theirs) if w is not None]
                    setattr(total, name, max(waits) if waits else None)
                else:
                    setattr(total, name, mine + theirs)
        return total

    async def __aenter__(self) -> FanoutSink:
        async with contextlib.AsyncExitStack() as stack:
            for sink in self.sinks:
                await stack.enter_async_context(sink)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    async def publish(self, decision: Decision) -> Decision:
        decision = decision.stamped()
        await self._each(lambda sink: sink.publish(decision))
        return decision

    async def publish_stats(self, stats: Stats) -> None:
        await self._each(lambda sink: sink.publish_stats(stats))

    async def _each(self, call) -> None:
        first_error: Exception | None = None
        for sink in self.sinks:
            try:
                await call(sink)
            except Exception as exc:  # re-raised below, once every sink had its turn
                first_error = first_error or exc
        if first_error is not None:
            raise first_error
