"""Replay a recording as an asynchronous event source.

`open_source(path)` returns a `FileSource`: an `EventSource` (see `base.py`) with `live = False`.
Opening the file, reading and decoding run in a worker thread, up to `_READ_AHEAD` chunks ahead
of the consumer (and on into the next pass of a looping replay), so the event loop never waits on
disk or decoding, and decoding overlaps the consumer's binning (our Numba kernels release the
GIL).

Pacing: with `speed=None` chunks come as fast as they decode. With a speed factor, events are
released when the wall clock reaches their recording time: an event at t is due
(t - t_first) / speed after the first one (speed=1 real time, 10 ten times faster, 0.5 half
speed). Chunks are cut at the due events, so a consumer receives small chunks about every
millisecond of wall time rather than a whole chunk early.

Looping (`loop=True`): the recording restarts when it ends, and its timestamps are shifted so
that time keeps increasing: pass k adds k * (t_last - t_first + 1) µs to every event. Windows
downstream therefore stay monotonic and the pacing goes on seamlessly. A recording without
events does not loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import numpy as np

from spikecut.errors import ConfigError
from spikecut.sources.events import StreamInfo
from spikecut.sources.files import open_reader
from spikecut.sources.reader import EventReader

#: A paced replay releases the events that are due at most this often (seconds of wall time).
_TICK_S = 0.001
#: Events per chunk a replay decodes (4x a reader's default): each chunk's hand-over from the
#: worker costs the binning thread a wait for the GIL, so fewer, bigger chunks overlap decoding
#: and binning better (file to 10 ms windows of a DAVIS346 recording: about 1.1x faster).
REPLAY_CHUNK_EVENTS = 1 << 18


class FileSource:
    """An `EventSource` replaying a file or an open `EventReader` (see the module docstring).

    `info` is available once the source is entered (`async with`), or once iteration started.
    A reader passed in stays open (its owner closes it); a path is opened and closed here.
    """

    live = False

    def __init__(
        self,
        path_or_reader: str | Path | EventReader,
        *,
        speed: float | None = None,
        loop: bool = False,
        chunk_events: int = REPLAY_CHUNK_EVENTS,
        lenient: bool = False,
        sensor_size: tuple[int, int] | None = None,
        format: str | None = None,
    ) -> None:
        if speed is not None and not (
            isinstance(speed, (int, float)) and math.isfinite(speed) and speed > 0
        ):
            raise ConfigError(f"speed must be a positive number or None, got {speed!r}")
        self.speed = None if speed is None else float(speed)
        self.loop = loop
        self._open_args = {
            "chunk_events": chunk_events,
            "lenient": lenient,
            "sensor_size": sensor_size,
            "format": format,
        }
        if isinstance(path_or_reader, EventReader):
            self._reader: EventReader | None = path_or_reader
            self._path = path_or_reader.path
            self._owns_reader = False
        else:
            self._reader = None
            self._path = Path(path_or_reader)
            self._owns_reader = True
        self._workers = _Workers()  # decoding in worker threads
        #: Number of completed passes over the recording (grows with `loop=True`).
        self.passes = 0
        #: Paced replays: (recording t in µs, event-loop time in s) of the first event. An event
        #: at t is due at loop time origin[1] + (t - origin[0]) / (1e6 * speed); see `due_at`.
        self.origin: tuple[int, float] | None = None

    @property
    def info(self) -> StreamInfo:
        if self._reader is None:
            raise RuntimeError(f"{self._path}: enter the source (async with) to read its info")
        return self._reader.info

    @property
    def reader(self) -> EventReader | None:
        return self._reader

    def due_at(self, t_us: int) -> float | None:
        """Event-loop time at which an event at `t_us` is released (paced replays)."""
        if self.origin is None or self.speed is None:
            return None
        return self.origin[1] + (t_us - self.origin[0]) / (1e6 * self.speed)

    async def _ensure_open(self) -> EventReader:
        if self._reader is None:
            self._reader = await asyncio.to_thread(self._open_with_info)
        return self._reader

    def _open_with_info(self) -> EventReader:
        """Open the file and settle its info (a pre-scan, for files that declare no sensor
        size), both in the worker thread."""
        reader = open_reader(self._path, **self._open_args)
        try:
            _ = reader.info
        except BaseException:
            reader.close()
            raise
        return reader

    async def __aenter__(self) -> FileSource:
        await self._ensure_open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        # A consumer that left `async for` early leaves a worker decoding ahead, and maybe an
        # iteration going on (a `windows()` stage it left without closing runs until collected):
        # start no new worker, and let the running ones finish (milliseconds), so the reader is
        # never closed under a decoding thread.
        workers, self._workers = self._workers, _Workers()  # a fresh set for a next entry
        await workers.close()
        self._close_reader()

    def _close_reader(self) -> None:
        if self._owns_reader and self._reader is not None:
            self._reader.close()
            self._reader = None

    def __aiter__(self) -> AsyncIterator[np.ndarray]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[np.ndarray]:
        opened_here = self._reader is None
        reader = await self._ensure_open()
        self.origin = None
        offset = 0
        first_t = last_t = None
        workers = self._workers
        try:
            async with contextlib.aclosing(_decoded(reader, workers, self.loop)) as decoded:
                async for chunk in decoded:
                    if chunk is None:  # a pass over the recording ended (or the source closed)
                        if workers.closing:
                            return
                        self.passes += 1
                        if not self.loop or first_t is None:
                            return
                        offset += last_t - first_t + 1
                        first_t = last_t = None
                        continue
                    if offset:
                        chunk["t"] += offset
                    if first_t is None:
                        first_t = int(chunk["t"][0])
                    last_t = int(chunk["t"][-1])
                    if self.speed is None:
                        yield chunk
                        continue
                    if self.origin is None:
                        self.origin = (first_t, asyncio.get_running_loop().time())
                    async for part in self._paced(chunk, self.origin):
                        yield part
        finally:
            if opened_here:
                self._close_reader()

    async def _paced(
        self, chunk: np.ndarray, origin: tuple[int, float]
    ) -> AsyncIterator[np.ndarray]:
        """Cut `chunk` into the parts due by now, sleeping until each next event is due.

        Parts go out at most once per `_TICK_S` of wall time, with a sleep in between: on a dense
        recording new events fall due while the consumer handles a part, and releasing them at
        once would hand out slivers without ever letting the event loop run.
        """
        clock = asyncio.get_running_loop()
        t_origin, wall_origin = origin
        us_per_s = 1e6 * self.speed
        t = chunk["t"]
        start = 0
        while start < t.size:
            now = clock.time()
            due_until = t_origin + (now - wall_origin) * us_per_s
            stop = int(np.searchsorted(t, due_until, side="right"))
            next_release = now
            if stop > start:
                yield chunk[start:stop]
                start = stop
                if start == t.size:
                    return
                next_release = now + _TICK_S
            due_at = wall_origin + (int(t[start]) - t_origin) / us_per_s
            await asyncio.sleep(max(due_at, next_release) - clock.time())


class _Workers:
    """A source's decoding threads: started here, and waited for when the source closes."""

    def __init__(self) -> None:
        self.running: set[asyncio.Future] = set()
        self.closing = False

    def start(self, work: Callable[[], None]) -> asyncio.Future:
        worker = asyncio.get_running_loop().run_in_executor(None, work)
        self.running.add(worker)
        worker.add_done_callback(self.running.discard)
        return worker

    async def close(self) -> None:
        """Refuse new workers from now on, and wait for the running ones."""
        self.closing = True
        while self.running:
            await asyncio.wait(set(self.running))


async def _decoded(
    reader: EventReader, workers: _Workers, loop: bool
) -> AsyncIterator[np.ndarray | None]:
    """The reader's chunks, decoded in a worker thread that runs up to `_READ_AHEAD` chunks ahead
    of the consumer, and None at the end of each pass; with `loop`, the worker goes on with the
    next pass (after one that had events) without waiting for the consumer to get there. The
    chunks are the reader's own arrays, free to modify. `workers` holds the worker's future while
    it runs, for the owner to wait on before closing the reader. The consumer stops iterating
    after the last pass (the worker stops there too). Once the owner closes, the chunks end."""
    ahead = _ReadAhead(reader, workers, loop)
    try:
        while True:
            taken, ended, error = await ahead.next()
            for chunk in taken:
                yield chunk
            if error is not None:
                raise error
            if ended:
                yield None
    finally:
        await ahead.close()


#: Chunks a replay's worker decodes ahead of the consumer.
_READ_AHEAD = 2
#: What a worker hands over: chunks, whether a pass ended, and an error to raise after them.
_Taken = tuple[list[np.ndarray], bool, "BaseException | None"]


class _ReadAhead:
    """A worker thread that keeps decoding while the consumer bins: it runs from one `next()` to
    the next without waiting for the event loop, and goes back to the pool when `_READ_AHEAD`
    chunks wait (a replay never holds a pool thread while its consumer is slow). Decoding and
    binning then overlap as far as the two threads can run at once; a worker started anew for
    every chunk leaves gaps of a loop turn each.

    Chunks go into a deque under a lock, and the worker wakes the event loop only when the
    consumer waits for one: a wake-up costs the worker a system call (and a hand-over of the
    GIL, which the busy consumer then waits for) for nothing while the consumer is busy."""

    def __init__(self, reader: EventReader, workers: _Workers, loop: bool) -> None:
        self._loop = asyncio.get_running_loop()
        self._reader = reader
        self._chunks: Iterator[np.ndarray] = iter(reader)
        self._limit = reader.chunk_events
        self._repeat = loop
        self._pass_events = 0  # events the worker decoded in the current pass
        self._workers = workers
        self._lock = threading.Lock()  # guards the five below across the threads
        self._ready: collections.deque[_Taken] = collections.deque()
        self._running = True
        self._finished = False  # the worker delivered its last item
        self._stop = False  # the consumer left
        self._waiting = False  # the consumer waits on `_arrived`
        self._arrived: asyncio.Future[None] | None = None
        self._worker: asyncio.Future[None] | None = None
        self._submit()

    async def next(self) -> _Taken:
        while True:
            with self._lock:
                if self._ready:
                    taken = self._ready.popleft()
                    resume = not (self._running or self._finished or self._stop)
                    self._running |= resume
                    break
                self._waiting = True
                self._arrived = self._loop.create_future()
                stopped = not self._running
            if self._worker is not None and self._worker.done():
                self._worker.result()  # a failure of the worker itself (never of the reader)
                if stopped:
                    raise RuntimeError("the replay worker stopped without handing over a chunk")
            await self._arrived
        if resume and self._workers.closing:  # the source is closing: no new worker
            with self._lock:
                self._running, self._finished = False, True
            return [], True, None
        if resume:
            self._submit()
        return taken

    async def close(self) -> None:
        """Stop the worker after its current chunk and wait for it (milliseconds), so the reader
        is never closed under a decoding thread."""
        with self._lock:
            self._stop = True
        if self._worker is not None and not self._worker.done():
            await asyncio.wait({self._worker})
        self._chunks.close()

    def _submit(self) -> None:
        self._worker = self._workers.start(self._work)
        self._worker.add_done_callback(lambda _: self._wake())

    def _work(self) -> None:
        """In the worker thread: decode until the consumer is `_READ_AHEAD` chunks behind, the
        reader ends (for good) or fails, or the consumer left."""
        while True:
            try:
                taken = _take(self._chunks, self._limit)
            except Exception as exc:  # raised to the consumer after the chunks before it
                taken = [], False, exc
            chunks, ended, error = taken
            self._pass_events += sum(chunk.size for chunk in chunks)
            again = ended and error is None and self._repeat and self._pass_events > 0
            if again:
                self._chunks.close()
                self._chunks = iter(self._reader)
                self._pass_events = 0
            with self._lock:
                self._ready.append(taken)
                self._finished = error is not None or (ended and not again)
                pause = self._finished or self._stop or len(self._ready) >= _READ_AHEAD
                if pause:
                    self._running = False
                wake, self._waiting = self._waiting, False
            if wake:
                self._loop.call_soon_threadsafe(self._wake)
            if pause:
                return

    def _wake(self) -> None:
        if self._arrived is not None and not self._arrived.done():
            self._arrived.set_result(None)


def _take(
    chunks: Iterator[np.ndarray], limit: int
) -> tuple[list[np.ndarray], bool, BaseException | None]:
    """The next chunk, and with a short one (fewer than `limit` events: usually the file's last)
    also the one after it, so a small file's end costs no second trip to a worker thread: a wake-up
    of the event loop that a segment of a few steps would feel. Returns (chunks, ended, error);
    an error after a good chunk is handed back to be raised once that chunk is delivered."""
    chunk = next(chunks, None)
    if chunk is None:
        return [], True, None
    if chunk.size >= limit:
        return [chunk], False, None
    try:
        after = next(chunks, None)
    except Exception as exc:
        return [chunk], False, exc
    return ([chunk], True, None) if after is None else ([chunk, after], False, None)


#: Replay a file (or an open reader) as an async `EventSource`; see the module docstring.
open_source = FileSource


__all__ = ["FileSource", "open_source"]
