"""What every live source shares: reconnect with backoff, gap accounting and event hygiene.

A live source is a producer task (one connection at a time, reconnecting when the peer goes away)
feeding a bounded queue, and a consumer side (`__anext__`) that makes the events safe for the
rest of the pipeline before handing them out:

The events pass the file readers' own `EventValidator` (one place for these rules), set up for a
stream that must go on:

- Events outside the announced sensor are dropped and counted (`dropped_out_of_bounds`); the
  Numba kernels downstream do not bounds-check, so none may get through.
- Time never goes backwards. How far an event steps back decides what happens to it:
  - at most `jitter_us` (sensor jitter: Prophesee sensors emit events a few µs out of order):
    moved forward to the time already delivered, counted in `clamped_backwards`;
  - further, up to `clock_reset_us`: dropped and counted in `dropped_backwards` (the default
    `backwards="drop"`), or, with `backwards="error"`, the stream ends with `EventDataError`;
  - further than `clock_reset_us` (10 ms by default: far beyond any sensor's disorder), or any
    step back across a reconnect: the peer restarted its clock (a camera restarted, a player
    looped its recording). The timestamps from there on are shifted so the stream continues
    where it was (plus, after a reconnect, the wall-clock time spent disconnected), counted in
    `clock_rebases`. Dropping instead would lose every event until the new clock passed the
    old one, which for a looping recording is never.
- A full queue blocks the producer (TCP flow control, or the driver's own buffer, then pushes
  back on the peer): nothing received is dropped silently.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from spikecut.errors import ConfigError, SourceUnavailableError
from spikecut.sources.events import StreamInfo
from spikecut.sources.reader import EventValidator

BACKWARDS_POLICIES = ("drop", "error")

#: How long closing waits for a worker thread to notice its stop flag before abandoning it.
_THREAD_JOIN_TIMEOUT_S = 5.0


class PeerUnavailable(Exception):
    """Internal: this connection attempt failed or the connection dropped; worth retrying."""


@dataclass(frozen=True)
class ReconnectPolicy:
    """When and how often a live source (re)connects.

    `wait`: at start, keep retrying until the peer appears instead of failing at once.
    `reconnect`: after the peer drops, reconnect (the default) instead of ending the stream.
    Delays double from `backoff_s` up to `backoff_max_s`. `max_retries` bounds the consecutive
    failed attempts before giving up with `SourceUnavailableError` (None: never give up).
    """

    reconnect: bool = True
    wait: bool = False
    backoff_s: float = 0.1
    backoff_max_s: float = 5.0
    max_retries: int | None = None
    connect_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        for name in ("backoff_s", "backoff_max_s", "connect_timeout_s"):
            value = getattr(self, name)
            if not value > 0:
                raise ConfigError(f"option {name!r} must be > 0 seconds, got {value!r}")
        if self.backoff_max_s < self.backoff_s:
            raise ConfigError(
                f"option 'backoff_max_s' ({self.backoff_max_s}) must be >= "
                f"'backoff_s' ({self.backoff_s})"
            )
        if self.max_retries is not None and self.max_retries < 0:
            raise ConfigError(f"option 'max_retries' must be >= 0, got {self.max_retries!r}")

    def delay_s(self, failures: int) -> float:
        """Delay before attempt number `failures` (1-based) of a reconnect sequence."""
        return min(self.backoff_max_s, self.backoff_s * 2.0 ** max(failures - 1, 0))


@dataclass
class LiveStats:
    """Counters a live source keeps; `as_dict()` is what a stats topic publishes.

    `disconnected_s` is the total time spent without a connection after the first one (the
    gaps), including the gap in progress; `last_gap_s` the length of the last closed gap.
    """

    events: int = 0
    chunks: int = 0
    bytes: int = 0
    connects: int = 0
    reconnects: int = 0
    disconnects: int = 0
    failed_attempts: int = 0
    last_gap_s: float | None = None
    dropped_out_of_bounds: int = 0
    dropped_backwards: int = 0
    clamped_backwards: int = 0
    clock_rebases: int = 0
    device_overflows: int = 0
    last_error: str | None = None
    closed_gaps_s: float = 0.0
    gap_started: float | None = field(default=None, repr=False)

    @property
    def connected(self) -> bool:
        return self.connects > 0 and self.gap_started is None

    @property
    def disconnected_s(self) -> float:
        ongoing = 0.0 if self.gap_started is None else time.monotonic() - self.gap_started
        return self.closed_gaps_s + ongoing

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["gap_started"], data["closed_gaps_s"]
        data["connected"] = self.connected
        data["disconnected_s"] = self.disconnected_s
        return data


@dataclass(frozen=True)
class _Reconnected:
    gap_us: int


@dataclass(frozen=True)
class _End:
    error: BaseException | None = None


class LiveSource:
    """Base of every live source; subclasses implement `_open`, `_pump` and `_close_connection`.

    `_open()` makes one connection attempt: it returns a connection object, raises
    `PeerUnavailable` when retrying may help, or any `SpikecutError` when it cannot. It calls
    `_announce(width, height, ...)` so `info` is known (and unchanged) on every connection.
    `_pump(connection)` hands events to `_emit` until the peer ends (return) or drops
    (`PeerUnavailable`).
    """

    live = True

    def __init__(
        self,
        name: str,
        *,
        policy: ReconnectPolicy | None = None,
        backwards: str = "drop",
        jitter_us: int = 0,
        clock_reset_us: int = 10_000,
        queue_chunks: int = 64,
    ) -> None:
        if backwards not in BACKWARDS_POLICIES:
            raise ConfigError(
                f"option 'backwards' must be one of {BACKWARDS_POLICIES}, got {backwards!r}"
            )
        if not 0 <= jitter_us < clock_reset_us:
            raise ConfigError(
                f"options 'jitter_us' ({jitter_us!r}) and 'clock_reset_us' ({clock_reset_us!r}) "
                "must satisfy 0 <= jitter_us < clock_reset_us"
            )
        if queue_chunks < 1:
            raise ConfigError(f"option 'queue_chunks' must be >= 1, got {queue_chunks!r}")
        self.name = name
        self.policy = policy or ReconnectPolicy()
        self.backwards = backwards
        self.jitter_us = int(jitter_us)
        self.clock_reset_us = int(clock_reset_us)
        self.stats = LiveStats()
        self._queue_chunks = queue_chunks
        self._info: StreamInfo | None = None
        self._queue: asyncio.Queue[Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._done = False
        self._validator: EventValidator | None = None

    # --- the EventSource protocol ---------------------------------------------------------

    @property
    def info(self) -> StreamInfo:
        if self._info is None:
            raise AttributeError(
                f"{self.name}: the sensor size is known once the source is open (async with)"
            )
        return self._info

    async def __aenter__(self) -> LiveSource:
        if self._queue is not None:
            raise SourceUnavailableError(f"{self.name}: a live source can be opened only once")
        self._queue = asyncio.Queue(self._queue_chunks)
        connection = await self._connect_first()
        self._task = asyncio.create_task(self._produce(connection), name=f"spikecut {self.name}")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop for good: the producer is cancelled, nothing reconnects."""
        self._done = True
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task})  # unlike `await task`, lets our own cancellation through
        if self._queue is not None and not self._queue.full():
            self._queue.put_nowait(_End())  # wakes a consumer waiting in another task

    def __aiter__(self) -> LiveSource:
        return self

    async def __anext__(self) -> np.ndarray:
        if self._queue is None:
            raise SourceUnavailableError(f"{self.name}: open the source with `async with` first")
        while not self._done:
            item = await self._queue.get()
            if isinstance(item, _End):
                self._done = True
                if item.error is not None:
                    raise item.error
                break
            if isinstance(item, _Reconnected):
                self._checked().rebase_after(item.gap_us)
                continue
            events = self._clean(item)
            if events.size:
                self.stats.events += int(events.size)
                self.stats.chunks += 1
                return events
        raise StopAsyncIteration

    # --- for subclasses -------------------------------------------------------------------

    async def _open(self) -> Any:
        raise NotImplementedError

    async def _pump(self, connection: Any) -> None:
        raise NotImplementedError

    async def _close_connection(self, connection: Any) -> None:
        raise NotImplementedError

    def _announce(self, width: int, height: int, **fields: Any) -> None:
        """Record the sensor geometry a connection announced; it may not change later."""
        if self._info is None:
            self._info = StreamInfo(
                width=int(width), height=int(height), source=self.name, **fields
            )
        elif (self._info.width, self._info.height) != (width, height):
            raise SourceUnavailableError(
                f"{self.name}: the peer changed its sensor size from "
                f"{self._info.width}x{self._info.height} to {width}x{height} across a reconnect"
            )

    async def _emit(self, events: np.ndarray) -> None:
        """Queue one chunk (waits while the consumer is behind)."""
        assert self._queue is not None
        await self._queue.put(events)

    async def _run_worker(
        self, work: Callable[[threading.Event, Callable[[Any], bool]], None]
    ) -> None:
        """Run the blocking `work(stop, emit)` in a daemon thread until it returns.

        `emit(events)` queues a chunk from the thread, waiting while the queue is full; it
        returns False once `stop` is set (the source is closing). Exceptions raised by `work`
        (e.g. `PeerUnavailable`) are re-raised here. Cancelling sets `stop` and waits for the
        thread to notice it.
        """
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        finished: concurrent.futures.Future[None] = concurrent.futures.Future()
        queue = self._queue
        assert queue is not None

        def emit(item: Any) -> bool:
            put = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
            while True:
                try:
                    put.result(timeout=0.05)
                    return True
                except concurrent.futures.TimeoutError:
                    if stop.is_set():
                        put.cancel()
                        return False

        def main() -> None:
            try:
                work(stop, emit)
            except BaseException as exc:  # handed to the event loop, not lost in the thread
                finished.set_exception(exc)
            else:
                finished.set_result(None)

        thread = threading.Thread(target=main, name=f"spikecut {self.name}", daemon=True)
        thread.start()
        waiter = asyncio.wrap_future(finished)
        try:
            await asyncio.shield(waiter)
        finally:
            stop.set()
            if not finished.done():
                # Closing: give the thread time to see `stop`; a driver call that never returns
                # leaves a daemon thread behind rather than hanging the shutdown.
                done, _ = await asyncio.wait({waiter}, timeout=_THREAD_JOIN_TIMEOUT_S)
                if not done:
                    self.stats.last_error = "worker thread did not stop in time; abandoned"

    # --- connection lifecycle -------------------------------------------------------------

    async def _attempt(self) -> Any:
        try:
            return await self._open()
        except PeerUnavailable as exc:
            self.stats.failed_attempts += 1
            self.stats.last_error = str(exc)
            raise

    def _give_up(self, failures: int, error: PeerUnavailable) -> None:
        limit = self.policy.max_retries
        if limit is not None and failures > limit:
            raise SourceUnavailableError(
                f"{self.name}: gave up after {failures} failed connection attempts "
                f"(max_retries={limit}); last error: {error}"
            ) from None

    async def _connect_first(self) -> Any:
        failures = 0
        while True:
            try:
                connection = await self._attempt()
                break
            except PeerUnavailable as exc:
                if not self.policy.wait:
                    raise SourceUnavailableError(
                        f"{self.name}: {exc} (add wait=true to keep retrying until it appears)"
                    ) from None
                failures += 1
                self._give_up(failures, exc)
                await asyncio.sleep(self.policy.delay_s(failures))
        self.stats.connects += 1
        return connection

    async def _reconnect(self) -> Any:
        failures = 0
        while True:
            failures += 1
            await asyncio.sleep(self.policy.delay_s(failures))
            try:
                return await self._attempt()
            except PeerUnavailable as exc:
                self._give_up(failures, exc)

    async def _produce(self, connection: Any) -> None:
        assert self._queue is not None
        try:
            while True:
                try:
                    await self._pump(connection)
                except PeerUnavailable as exc:
                    self.stats.last_error = str(exc)
                finally:
                    await self._close_connection(connection)
                if not self.policy.reconnect:
                    break
                self.stats.disconnects += 1
                self.stats.gap_started = time.monotonic()
                connection = await self._reconnect()
                gap_s = time.monotonic() - self.stats.gap_started
                self.stats.gap_started = None
                self.stats.closed_gaps_s += gap_s
                self.stats.last_gap_s = gap_s
                self.stats.connects += 1
                self.stats.reconnects += 1
                await self._queue.put(_Reconnected(gap_us=int(gap_s * 1e6)))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._queue.put(_End(exc))
            return
        await self._queue.put(_End())

    # --- event hygiene ---------------------------------------------------------------------

    def _checked(self) -> EventValidator:
        if self._validator is None:
            info = self.info
            self._validator = _StreamValidator(
                info.width,
                info.height,
                jitter_us=self.jitter_us,
                source=self.name,
                drop_outside=True,
                drop_backwards=self.backwards == "drop",
                clock_reset_us=self.clock_reset_us,
            )
        return self._validator

    def _clean(self, events: np.ndarray) -> np.ndarray:
        validator = self._checked()
        if not events.flags.writeable:  # the validator compacts and retimes in place
            events = events.copy()
        try:
            return validator(events)
        finally:
            checked, stats = validator.stats, self.stats
            stats.dropped_out_of_bounds = checked.dropped_out_of_sensor
            stats.dropped_backwards = checked.dropped_backwards
            stats.clamped_backwards = checked.clamped_backwards
            stats.clock_rebases = checked.clock_rebases


class _StreamValidator(EventValidator):
    """A live stream's wording: it has no event index to name, and `backwards=` is the option."""

    def _backwards_message(self, index: int, previous: int, t: int) -> str:
        return (
            f"{self.source}: timestamps go backwards ({previous} us -> {t} us; use "
            "backwards=drop to drop such events instead)"
        )
