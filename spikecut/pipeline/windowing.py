"""The asyncio windowing stage: any event source in, `Window`s out.

    async with open_source(path) as source:           # the caller owns the source
        async for window in windows(source, spec):
            ...  # window.frames is [P, H', W'], yours to keep

A producer task reads the source and runs the `FrameBuilder` (the same engine as
`frames_for_recording`, so frames are bit-identical to training); windows travel to the consumer
through a bounded buffer:

- `policy="block"` (file replay): when the buffer is full the producer waits, so the source is not
  read; nothing is ever lost and memory stays bounded.
- `policy="drop_oldest"` (live): the producer never waits; when the buffer is full the oldest
  window is discarded. Every discarded window is counted in the next delivered window's
  `drops.backpressure_windows` / `backpressure_events` (together with the drop counters it
  carried), and in `StageStats`.

Time windows close on sensor time. For live sources (`source.live`) the stage also watches the wall
clock: once the sensor must have passed a window's end (estimated from the newest chunk's last
timestamp and the host clock, plus `wall_grace_us` of slack for transport jitter) the window closes
without waiting for an event, empty if the sensor is silent, flagged `closed_by_wall_clock`. Events
that arrive later for a closed window are counted as late. Before the first event the stage has no
sensor time to align windows with, so it waits; count windows never close on the wall clock.

At the end of the stream the started, incomplete windows are emitted (`end="emit"`, flagged
`partial`) or dropped (`end="drop"`, counted as `drops.end_of_stream` in `StageStats`). If the
source raises, everything it delivered before is still binned and handed out (per `end`), then the
error is raised to the consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace

import numpy as np

from spikecut.errors import ConfigError, EventDataError
from spikecut.pipeline.binning import END_OPTIONS, Drops, FrameBuilder, Window, WindowSpec
from spikecut.pipeline.filters import check_duration
from spikecut.sources.base import EventSource
from spikecut.sources.events import EVENT_DTYPE

POLICIES = ("block", "drop_oldest")


@dataclass
class StageStats:
    """Cumulative numbers of one `windows()` run, updated as it goes (read them at any time)."""

    windows: int = 0  # delivered to the consumer
    events: int = 0  # counted into delivered windows
    wall_clock_windows: int = 0  # delivered windows closed by the wall clock
    _drops: Callable[[], Drops] | None = field(default=None, repr=False, compare=False)

    @property
    def drops(self) -> Drops:
        """Everything lost so far, by reason, including backpressure and the end of stream."""
        return Drops() if self._drops is None else self._drops()


async def windows(
    source: EventSource,
    spec: WindowSpec,
    *,
    end: str = "emit",
    queue_size: int = 8,
    policy: str = "block",
    wall_grace_us: int = 5_000,
    stats: StageStats | None = None,
) -> AsyncIterator[Window]:
    """Yield the windows of `source` binned per `spec` (see the module docstring).

    `queue_size` bounds how many finished windows wait for a slow consumer. `stats`, if given, is
    kept up to date with cumulative counts, including what no delivered window could report (the
    drops after the last window, windows discarded at the end).
    """
    if end not in END_OPTIONS:
        raise ConfigError(f"end must be one of {END_OPTIONS}, got {end!r}")
    if policy not in POLICIES:
        raise ConfigError(f"policy must be one of {POLICIES}, got {policy!r}")
    if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
        raise ConfigError(f"queue_size must be a positive integer, got {queue_size!r}")
    check_duration("wall_grace_us", wall_grace_us, allow_zero=True)
    builder = FrameBuilder(spec, source.info)
    stats = stats if stats is not None else StageStats()
    buffer = _Buffer(queue_size, policy, builder, stats)
    producer = asyncio.create_task(
        _produce(source, builder, buffer, end, bool(source.live), wall_grace_us),
        name="spikecut-windowing",
    )
    try:
        while True:
            window = await buffer.get()
            if window is None:
                break
            yield window
    finally:
        if not producer.done():
            producer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await producer


class _Buffer:
    """Bounded hand-over between the producer task and the consumer, with the drop policy.

    One producer, one consumer, one event loop: checks and updates never straddle an await, so
    no lock is needed; each side parks on a future only when it must wait.
    """

    def __init__(self, size: int, policy: str, builder: FrameBuilder, stats: StageStats) -> None:
        self._items: deque[Window] = deque()
        self._size = size
        self._policy = policy
        self._stats = stats
        stats._drops = lambda: builder.totals + self._backpressure
        self._pending = Drops()  # carried by discarded windows, owed to the next delivered one
        self._backpressure = Drops()  # cumulative
        self._closed = False
        self._error: BaseException | None = None
        self._wake_consumer: asyncio.Future[None] | None = None
        self._wake_producer: asyncio.Future[None] | None = None

    @staticmethod
    def _wake(future: asyncio.Future[None] | None) -> None:
        if future is not None and not future.done():
            future.set_result(None)

    async def put(self, window: Window) -> None:
        if self._policy == "block":
            while len(self._items) >= self._size:
                self._wake_producer = asyncio.get_running_loop().create_future()
                await self._wake_producer
        elif len(self._items) >= self._size:
            old = self._items.popleft()
            lost = Drops(backpressure_windows=1, backpressure_events=old.n_events)
            self._pending = self._pending + old.drops + lost
            self._backpressure = self._backpressure + lost
        self._items.append(window)
        if self._wake_consumer is not None and not self._wake_consumer.done():
            self._wake(self._wake_consumer)
            await asyncio.sleep(0)  # let a waiting consumer take it now, not after the chunk

    async def close(self, error: BaseException | None = None) -> None:
        self._closed = True
        self._error = error
        self._wake(self._wake_consumer)

    async def get(self) -> Window | None:
        while not self._items and not self._closed:
            self._wake_consumer = asyncio.get_running_loop().create_future()
            await self._wake_consumer
        stats = self._stats
        if self._items:
            window = self._items.popleft()
            self._wake(self._wake_producer)
            if self._pending != Drops():
                window = replace(window, drops=window.drops + self._pending)
                self._pending = Drops()
            stats.windows += 1
            stats.events += window.n_events
            stats.wall_clock_windows += window.closed_by_wall_clock
            return window
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return None


async def _produce(
    source: EventSource,
    builder: FrameBuilder,
    buffer: _Buffer,
    end: str,
    live: bool,
    wall_grace_us: int,
) -> None:
    error: BaseException | None = None
    try:
        if live:
            await _produce_live(source, builder, buffer, wall_grace_us)
        else:
            async for chunk in source:
                for window in builder.push_iter(_checked(chunk, source)):
                    await buffer.put(window)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # delivered to the consumer after what was already received
        error = exc
    for window in builder.finish_iter(end):
        await buffer.put(window)
    await buffer.close(error)


async def _produce_live(
    source: EventSource, builder: FrameBuilder, buffer: _Buffer, wall_grace_us: int
) -> None:
    iterator = source.__aiter__()
    pending: asyncio.Future[np.ndarray] | None = None
    offset_us: int | None = None  # sensor time minus host time, from the newest chunk
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(iterator.__anext__())
            timeout = None
            next_close = builder.next_close_us
            if offset_us is not None and next_close is not None:
                due_us = next_close + wall_grace_us - offset_us
                timeout = max(0.0, (due_us - _now_us()) / 1e6)
            done, _ = await asyncio.wait({pending}, timeout=timeout)
            if pending in done:
                future, pending = pending, None
                try:
                    chunk = _checked(future.result(), source)
                except StopAsyncIteration:
                    return
                if chunk.size:
                    offset_us = int(chunk["t"][-1]) - _now_us()
                for window in builder.push_iter(chunk):
                    await buffer.put(window)
            elif offset_us is not None:
                sensor_now_us = _now_us() + offset_us - wall_grace_us
                for window in builder.advance_iter(sensor_now_us, wall_clock=True):
                    await buffer.put(window)
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration, Exception):
                await pending


def _now_us() -> int:
    return time.perf_counter_ns() // 1_000


def _checked(chunk: object, source: EventSource) -> np.ndarray:
    if not isinstance(chunk, np.ndarray) or chunk.dtype != EVENT_DTYPE:
        raise EventDataError(
            f"{source.info.source}: a source must yield EVENT_DTYPE arrays, got "
            f"{type(chunk).__name__} {getattr(chunk, 'dtype', '')}"
        )
    return chunk


__all__ = ["POLICIES", "StageStats", "windows"]
