"""The async replay source: same events as the reader, pacing by the recording's timestamps,
looping with increasing time, decoding off the event loop. Timing checks are lower bounds or
comparisons on the event loop's own clock, never tight wall-clock windows."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from spikecut.errors import ConfigError, CorruptFileError
from spikecut.pipeline.binning import WindowSpec
from spikecut.pipeline.windowing import windows
from spikecut.sources import open_reader, open_source, read_events, replay
from spikecut.sources.atis import AtisBinReader
from spikecut.sources.base import EventSource

PEDESTRIANS = "prophesee_raw/evt3_gen41_pedestrians_5000ev.raw"  # 5000 events over 45.2 ms
NMNIST = "atis_bin/nmnist_tonic_sample.bin"
AEDAT4 = "aedat4/davis346_aestream_example.aedat4"


async def _collect(source) -> list[np.ndarray]:
    return [chunk async for chunk in source]


async def test_fast_replay_gives_the_readers_events(real_data):
    path = real_data / PEDESTRIANS
    expected, info = read_events(path)
    async with open_source(path, chunk_events=700) as source:
        assert isinstance(source, EventSource)
        assert source.live is False and source.info == info
        chunks = await _collect(source)
    assert all(0 < c.size <= 700 for c in chunks)
    np.testing.assert_array_equal(np.concatenate(chunks), expected)


async def test_iterating_without_async_with_opens_and_closes(real_data):
    source = open_source(real_data / NMNIST)
    with pytest.raises(RuntimeError, match="enter the source"):
        source.info  # noqa: B018
    chunks = await _collect(source)
    assert sum(c.size for c in chunks) == 4325
    assert source.reader is None  # closed again


@pytest.mark.parametrize("speed", [0.5, 1.0, 4.0])
async def test_paced_replay_never_runs_ahead_of_the_recording(real_data, speed):
    path = real_data / PEDESTRIANS
    expected, _ = read_events(path)
    duration_s = (int(expected["t"][-1]) - int(expected["t"][0])) * 1e-6
    clock = asyncio.get_running_loop()
    chunks, released = [], []
    async with open_source(path, speed=speed) as source:
        async for chunk in source:
            released.append(clock.time())
            chunks.append(chunk)
        assert source.origin[0] == int(expected["t"][0])
        for chunk, at in zip(chunks, released, strict=True):
            assert source.due_at(int(chunk["t"][-1])) <= at + 1e-9  # never early
        start = source.origin[1]
    np.testing.assert_array_equal(np.concatenate(chunks), expected)
    assert released[-1] - start >= duration_s / speed - 1e-9
    assert len(chunks) > 5  # released progressively, not in one go


async def test_loop_keeps_time_increasing(real_data):
    path = real_data / PEDESTRIANS
    once, _ = read_events(path)
    period = int(once["t"][-1]) - int(once["t"][0]) + 1
    events = []
    async with open_source(path, loop=True, chunk_events=2048) as source:
        async for chunk in source:
            events.append(chunk)
            if sum(c.size for c in events) >= 3 * once.size:
                break
        assert source.passes >= 2
    events = np.concatenate(events)[: 3 * once.size]
    assert np.all(np.diff(events["t"]) >= 0)
    for k in range(3):
        lap = events[k * once.size : (k + 1) * once.size]
        np.testing.assert_array_equal(lap["t"], once["t"] + k * period)
        np.testing.assert_array_equal(lap[["x", "y", "p"]], once[["x", "y", "p"]])


async def test_paced_loop_continues_on_schedule(real_data):
    """Two passes at 4x take at least two recording lengths / 4."""
    path = real_data / PEDESTRIANS
    once, _ = read_events(path)
    duration_s = (int(once["t"][-1]) - int(once["t"][0])) * 1e-6
    clock = asyncio.get_running_loop()
    count = 0
    async with open_source(path, loop=True, speed=4.0) as source:
        async for chunk in source:
            count += chunk.size
            if count >= 2 * once.size:
                break
        assert clock.time() - source.origin[1] >= 2 * duration_s / 4 - 1e-9


class _SlowReader(AtisBinReader):
    """Blocks 30 ms per chunk (like a slow disk) and notes which thread decodes."""

    def __init__(self, *args, **kwargs) -> None:
        self.threads: set[int] = set()
        super().__init__(*args, **kwargs)

    def _decode(self):
        for chunk in super()._decode():
            self.threads.add(threading.get_ident())
            time.sleep(0.03)
            yield chunk


async def test_decoding_runs_off_the_event_loop(real_data):
    # 9 chunks, >= 270 ms of blocking; the size is given so no pre-scan runs here.
    reader = _SlowReader(real_data / NMNIST, chunk_events=500, sensor_size=(34, 34))
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        async with open_source(reader) as source:
            chunks = await _collect(source)
    finally:
        task.cancel()
    assert sum(c.size for c in chunks) == 4325
    assert threading.get_ident() not in reader.threads
    assert ticks >= 10  # the loop kept running while the worker blocked
    assert not reader._file.closed  # a reader passed in is left to its owner
    reader.close()


async def test_errors_reach_the_consumer_after_the_good_chunks(real_data, tmp_path):
    data = (real_data / PEDESTRIANS).read_bytes()
    path = tmp_path / "cut.raw"
    path.write_bytes(data[:20_000] + b"\x00\xb0" + data[20_000:])  # an undefined word
    received = []
    with pytest.raises(CorruptFileError, match="undefined EVT 3.0 word 0xB000"):
        async with open_source(path, chunk_events=256) as source:
            async for chunk in source:
                received.append(chunk)
    assert received and sum(c.size for c in received) > 0
    async with open_source(path, lenient=True) as source:
        head = np.concatenate(await _collect(source))
        assert source.reader.stats.error is not None
    np.testing.assert_array_equal(np.concatenate(received), head[: sum(map(len, received))])


async def test_stopping_early_closes_the_file(real_data):
    async with open_source(real_data / PEDESTRIANS, chunk_events=100) as source:
        reader = source.reader
        async for _ in source:
            break
    assert reader._file.closed


class _CloseWatchingReader(AtisBinReader):
    """Decodes slowly and notes whether it was closed while a worker was decoding."""

    decoding = closed_while_decoding = False

    def _decode(self):
        self.decoding = True
        for chunk in super()._decode():
            time.sleep(0.03)
            self.decoding = False
            yield chunk
            self.decoding = True
        self.decoding = False

    def close(self) -> None:
        self.closed_while_decoding |= self.decoding
        super().close()


async def test_leaving_the_source_waits_for_the_worker_before_closing(real_data, monkeypatch):
    """`break` leaves the iteration suspended while a worker prefetches the next chunk; leaving
    the `async with` must let that worker finish before the reader is closed."""
    readers = []

    def slow_open(path, **kwargs):
        readers.append(_CloseWatchingReader(path, chunk_events=500, sensor_size=(34, 34)))
        return readers[-1]

    monkeypatch.setattr(replay, "open_reader", slow_open)
    async with open_source(real_data / NMNIST) as source:
        async for _ in source:
            break
        await asyncio.sleep(0.01)  # the prefetching worker is now decoding the next chunk
    assert readers[0]._file.closed
    assert not readers[0].closed_while_decoding


class _CountingReader(AtisBinReader):
    """Notes each pass over the file, and in which thread it ran."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.passes: list[str] = []

    def _decode(self):
        self.passes.append(threading.current_thread().name)
        yield from super()._decode()


async def test_the_worker_decodes_ahead_across_passes_and_no_further(real_data):
    """A looping replay of a one-chunk file: while the consumer is busy with the first pass, the
    worker decodes the next ones (in its thread), but never more than `_READ_AHEAD` items ahead."""
    reader = _CountingReader(real_data / NMNIST, sensor_size=(34, 34))
    async with open_source(reader, loop=True) as source:
        chunks = aiter(source)
        first = await anext(chunks)
        await asyncio.sleep(0.1)  # the consumer is busy; the worker goes on
        assert len(reader.passes) == 1 + replay._READ_AHEAD
        assert threading.main_thread().name not in reader.passes
        second = await anext(chunks)
        await chunks.aclose()
    period = int(first["t"][-1]) - int(first["t"][0]) + 1
    np.testing.assert_array_equal(second["t"], first["t"] + period)
    reader.close()


async def test_leaving_a_windows_stage_without_closing_it(real_data):
    """`break` out of `windows()` leaves its producer running until the stage is collected; the
    source's exit must still not close the reader under a worker, nor start new ones."""
    spec = WindowSpec(window_us=1_000)
    for _ in range(10):
        async with open_source(real_data / AEDAT4, loop=True, chunk_events=2_000) as source:
            async for window in windows(source, spec):
                if window.index == 30:
                    break
        assert source.reader is None  # closed, no BufferError from a view still in use
    await asyncio.sleep(0.05)  # the abandoned stages end quietly


class _ShortThenBroken(AtisBinReader):
    """A short first chunk, then damage: the look-ahead meets the error in the same trip."""

    def _decode(self):
        chunks = super()._decode()
        yield next(chunks)
        raise CorruptFileError("damaged after the first chunk")


async def test_a_small_file_ends_in_one_worker_trip_and_errors_keep_their_order(
    real_data, monkeypatch
):
    trips = []

    def counted(chunks, limit):
        trips.append(limit)
        return take(chunks, limit)

    take = replay._take
    monkeypatch.setattr(replay, "_take", counted)
    async with open_source(real_data / NMNIST) as source:  # 4,325 events: one short chunk
        chunks = await _collect(source)
    np.testing.assert_array_equal(np.concatenate(chunks), read_events(real_data / NMNIST)[0])
    assert len(trips) == 1

    trips.clear()
    reader = _ShortThenBroken(real_data / NMNIST, chunk_events=5000, sensor_size=(34, 34))
    received = []
    with pytest.raises(CorruptFileError, match="damaged after the first chunk"):
        async with open_source(reader) as source:
            async for chunk in source:
                received.append(chunk)
    assert [c.size for c in received] == [4325] and len(trips) == 1
    reader.close()


async def test_cancelling_a_paced_replay(real_data):
    async def consume():
        async with open_source(real_data / PEDESTRIANS, speed=0.01) as source:
            async for _ in source:
                pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("speed", [0, -1.0, float("nan"), float("inf"), "fast"])
def test_speed_must_be_positive(real_data, speed):
    with pytest.raises(ConfigError, match="speed"):
        open_source(real_data / NMNIST, speed=speed)


async def test_reader_instance_can_be_replayed_twice(real_data):
    with open_reader(real_data / NMNIST) as reader:
        first = np.concatenate(await _collect(open_source(reader)))
        second = np.concatenate(await _collect(open_source(reader)))
    np.testing.assert_array_equal(first, second)
