"""raw+tcp / raw+pipe / raw+stdin: byte-stream plumbing, headers, reconnects and event hygiene.

The decoder here is a test one (13-byte EVENT_DTYPE records) so that these tests pin down the
transport, header and reconnect logic on their own; the real EVT3/EVT2 decoders are checked
end to end against the recordings in test_live_raw_prophesee.py. The header lines themselves
are parsed by `spikecut.sources.prophesee.parse_raw_header` (tested with the readers).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from live_peers import (
    RawPeer,
    RecordDecoder,
    collect,
    free_port,
    random_events,
    random_pieces,
    wait_until,
)

from spikecut.errors import ConfigError, EventDataError, SourceUnavailableError
from spikecut.sources.events import StreamInfo
from spikecut.sources.live.raw import read_header
from spikecut.sources.uri import open_uri

pytestmark = pytest.mark.timeout(60)

FAST = {"backoff_s": 0.05, "backoff_max_s": 0.2, "decoder": RecordDecoder}
HEADER = b"% camera test\r\n% format EVT3;height=48;width=64\n% end\n"


async def test_header_and_events_survive_any_split():
    events = random_events(4000, 64, 48)
    payload = HEADER + events.tobytes()
    port = free_port()
    uri = f"raw+tcp://127.0.0.1:{port}"
    peer = RawPeer(port, [random_pieces(payload, 700)], hold=True)
    # A two-chunk queue: the reader waits for the consumer instead of dropping anything.
    async with peer, open_uri(uri, decoder=RecordDecoder, queue_chunks=2) as source:
        assert source.info == StreamInfo(64, 48, uri, time_origin="sensor", format="evt3")
        received = await collect(source, events.size)
    np.testing.assert_array_equal(received, events)
    assert source.stats.bytes == len(payload)


def test_header_is_found_across_any_split():
    for i in range(len(HEADER)):
        assert read_header(HEADER[:i]) is None  # it may go on
    header = read_header(HEADER + b"\x25\x00tail")
    assert (header.version, header.sensor_size, header.length) == ("evt3", (64, 48), len(HEADER))


def test_binary_that_starts_with_a_percent_byte_is_not_a_header():
    assert read_header(b"%\x81\x02\x03").length == 0  # an EVT3 word whose low byte is 0x25
    header = read_header(b"% evt 2.0\n% geometry 8x8\n%\x00\x10\x00\x80")  # no `% end`
    assert (header.version, header.sensor_size, header.length) == ("evt2", (8, 8), 25)
    with pytest.raises(ConfigError, match="longer than 4096 bytes"):
        read_header(b"%" + b"x" * 5000)


async def test_reconnects_when_the_peer_restarts_and_rebases_its_clock():
    port = free_port()
    first = random_events(300, 64, 48, t0=5_000_000, seed=1)
    restarted = random_events(200, 64, 48, t0=10, seed=2)  # the camera's clock starts again
    source = open_uri(f"raw+tcp://127.0.0.1:{port}", **FAST)
    async with RawPeer(port, [[HEADER, first.tobytes()]]):
        await source.__aenter__()
        np.testing.assert_array_equal(await collect(source, first.size), first)
    try:
        await wait_until(lambda: source.stats.disconnects == 1)
        await wait_until(lambda: source.stats.failed_attempts >= 2)
        async with RawPeer(port, [[HEADER, restarted.tobytes()]], hold=True):
            await wait_until(lambda: source.stats.reconnects == 1)
            second = await collect(source, restarted.size)
            await source.aclose()
    finally:
        await source.aclose()
    stats = source.stats
    assert (stats.connects, stats.reconnects, stats.disconnects) == (2, 1, 1)
    assert stats.clock_rebases == 1
    # Shifted to continue after the first run, by the time spent disconnected; intervals kept.
    gap_us = second["t"][0] - first["t"][-1]
    assert 0 < gap_us <= stats.last_gap_s * 1e6 + 1
    np.testing.assert_array_equal(np.diff(second["t"]), np.diff(restarted["t"]))
    np.testing.assert_array_equal(second[["x", "y", "p"]], restarted[["x", "y", "p"]])


async def test_out_of_sensor_backwards_and_clock_reset_within_a_connection():
    port = free_port()
    events = random_events(10, 64, 48, t0=2_000_000)
    events["x"][2] = 64  # outside
    events["y"][3] = 500  # outside
    events["t"][6] = events["t"][5] - 7  # jitter: moved forward to t[5]
    events["t"][8] = events["t"][7] - 5000  # too far back for jitter: dropped
    tail = random_events(5, 64, 48, t0=100, seed=3)  # a jump back of ~2 s: the clock was reset
    payload = np.concatenate([events, tail]).tobytes()
    async with RawPeer(port, [[payload]], hold=True):
        uri = f"raw+tcp://127.0.0.1:{port}?format=evt3&width=64&height=48&jitter_us=10"
        async with open_uri(uri, decoder=RecordDecoder) as source:
            received = await collect(source, 7 + 5)
    stats = source.stats
    assert (stats.dropped_out_of_bounds, stats.dropped_backwards) == (2, 1)
    assert (stats.clamped_backwards, stats.clock_rebases) == (1, 1)
    assert np.all(np.diff(received["t"]) >= 0)
    kept = np.delete(events, [2, 3, 8])
    kept["t"][4] = kept["t"][3]  # the jittered event (index 6 before the deletions)
    np.testing.assert_array_equal(received[:7], kept)
    assert received["t"][7] == kept["t"][-1]  # the reset continues where the stream was
    np.testing.assert_array_equal(np.diff(received["t"][7:]), np.diff(tail["t"]))


async def test_backwards_error_policy():
    port = free_port()
    events = random_events(4, 8, 8, t0=1000)
    events["t"][2] = 990
    async with RawPeer(port, [[events.tobytes()]], hold=True):
        uri = f"raw+tcp://127.0.0.1:{port}?width=8&height=8&backwards=error&jitter_us=0"
        async with open_uri(uri, decoder=RecordDecoder) as source:
            with pytest.raises(EventDataError, match=r"backwards \(\d+ us -> 990 us"):
                await asyncio.wait_for(source.__anext__(), 10)


async def test_stream_without_header_needs_format_and_size_in_the_uri():
    port = free_port()
    async with RawPeer(port, [[random_events(3, 8, 8).tobytes()]], hold=True):
        with pytest.raises(ConfigError, match=r"width, height unknown \(it sent no % header\)"):
            async with open_uri(f"raw+tcp://127.0.0.1:{port}", decoder=RecordDecoder):
                pass


async def test_header_contradicting_the_uri_is_refused():
    port = free_port()
    async with RawPeer(port, [[HEADER, random_events(3, 8, 8).tobytes()]], hold=True):
        uri = f"raw+tcp://127.0.0.1:{port}?format=evt3&width=32&height=48"
        async with open_uri(uri, decoder=RecordDecoder) as source:
            with pytest.raises(ConfigError, match="announces width 64, but width is 32"):
                await asyncio.wait_for(source.__anext__(), 10)


async def test_a_peer_that_comes_back_with_another_sensor_is_refused():
    port = free_port()
    other = HEADER.replace(b"height=48;width=64", b"height=32;width=32")
    source = open_uri(f"raw+tcp://127.0.0.1:{port}", **FAST)
    async with RawPeer(port, [[HEADER, random_events(5, 64, 48).tobytes()]]):
        await source.__aenter__()
        await collect(source, 5)
    try:
        async with RawPeer(port, [[other]], hold=True):
            with pytest.raises(ConfigError, match="announces width 32, but width is 64"):
                await asyncio.wait_for(source.__anext__(), 10)
    finally:
        await source.aclose()
    assert source.stats.reconnects == 1


async def test_closing_wakes_a_consumer_waiting_in_another_task():
    port = free_port()
    async with RawPeer(port, [[]], hold=True):
        source = open_uri(f"raw+tcp://127.0.0.1:{port}?format=evt3&width=8&height=8")
        with pytest.raises(AttributeError, match="known once the source is open"):
            source.info  # noqa: B018
        async with source:
            waiting = asyncio.create_task(collect(source, 1))
            await asyncio.sleep(0)
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(waiting, 10)
    assert source.stats.disconnects == 0


async def test_silent_peer_times_out_when_the_header_is_needed():
    port = free_port()
    async with RawPeer(port, [[]], hold=True):
        uri = f"raw+tcp://127.0.0.1:{port}?connect_timeout_s=0.2"
        with pytest.raises(SourceUnavailableError, match="no data within 0.2 s"):
            async with open_uri(uri, decoder=RecordDecoder):
                pass


async def test_named_pipe_reconnects_when_a_new_writer_opens_it(tmp_path):
    fifo = tmp_path / "camera.fifo"
    os.mkfifo(fifo)
    first, second = random_events(100, 16, 16, seed=1), random_events(50, 16, 16, seed=2)
    second["t"] += first["t"][-1]
    header = b"% geometry 16x16\n% evt 3.0\n"

    def write(data: bytes) -> None:
        with open(fifo, "wb") as pipe:  # a writer session, like one run of a Metavision tool
            pipe.write(data)

    # The header tells the format and size, so opening waits for the first writer's bytes.
    writing = asyncio.create_task(asyncio.to_thread(write, header + first.tobytes()))
    async with open_uri(f"raw+pipe:{fifo}", **FAST) as source:
        await writing
        np.testing.assert_array_equal(await collect(source, first.size), first)
        await wait_until(lambda: source.stats.disconnects == 1)
        await asyncio.to_thread(write, header + second.tobytes())
        np.testing.assert_array_equal(await collect(source, second.size), second)
    assert source.info.width == 16 and source.stats.reconnects >= 1


STDIN_READER = """
import asyncio, json, sys
sys.path[:0] = [{repo!r}, {tests!r}]
from live_peers import RecordDecoder
from spikecut.sources.uri import open_uri

async def main():
    count, last = 0, None
    async with open_uri("raw+stdin:", decoder=RecordDecoder) as source:
        async for events in source:
            count += events.size
            last = int(events["t"][-1])
    info = [source.info.width, source.info.height]
    print(json.dumps({{"count": count, "last": last, "info": info,
                       "reconnect": source.policy.reconnect}}))

asyncio.run(main())
"""


def test_stdin_is_read_to_its_end():
    events = random_events(2000, 20, 10)
    repo = Path(__file__).resolve().parents[1]
    script = STDIN_READER.format(repo=str(repo), tests=str(repo / "tests"))
    done = subprocess.run(
        [sys.executable, "-c", script],
        input=b"% geometry 20x10\n% evt 3.0\n" + events.tobytes(),
        capture_output=True,
        timeout=60,
        check=True,
    )
    result = json.loads(done.stdout)
    assert result == {
        "count": events.size,
        "last": int(events["t"][-1]),
        "info": [20, 10],
        "reconnect": False,
    }
