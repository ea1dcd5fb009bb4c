"""dv:// against a real dv-processing NetworkWriter (in its own process) on loopback."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from live_peers import DvPeer, collect, free_port, random_events, wait_until

from spikecut.errors import EventDataError, SourceUnavailableError
from spikecut.sources.base import EventSource
from spikecut.sources.events import StreamInfo, make_events
from spikecut.sources.uri import open_uri

pytest.importorskip("dv_processing", reason="the camera extra (dv-processing) is not installed")
pytestmark = pytest.mark.timeout(60)

FAST = {"backoff_s": 0.05, "backoff_max_s": 0.2}


async def test_events_arrive_identical_and_in_order(tmp_path):
    port = free_port()
    uri = f"dv://127.0.0.1:{port}"
    events = random_events(3000, 32, 24, t0=1_700_000_000_000_000)
    async with DvPeer(port, 32, 24, tmp_path) as peer, open_uri(uri) as source:
        assert isinstance(source, EventSource) and source.live
        assert source.info == StreamInfo(32, 24, uri, time_origin="unix", format="dv-network")
        await peer.send(events, batch=700)
        received = await collect(source, events.size)
    np.testing.assert_array_equal(received, events)
    assert source.stats.events == events.size and source.stats.connects == 1
    assert source.stats.disconnects == 0 and source.stats.reconnects == 0


async def test_reconnects_with_backoff_when_the_peer_comes_back(tmp_path):
    port = free_port()
    first = random_events(500, 32, 24, t0=1_000_000, seed=1)
    second = random_events(400, 32, 24, t0=int(first["t"][-1]) + 10, seed=2)
    source = open_uri(f"dv://127.0.0.1:{port}", **FAST)
    async with DvPeer(port, 32, 24, tmp_path) as peer:
        await source.__aenter__()
        await peer.send(first, batch=128)
        np.testing.assert_array_equal(await collect(source, first.size), first)
    try:
        # The camera is gone: the source notices, and its reconnect attempts fail for a while.
        await wait_until(lambda: source.stats.disconnects == 1)
        await wait_until(lambda: source.stats.failed_attempts >= 2)
        assert not source.stats.connected
        async with DvPeer(port, 32, 24, tmp_path) as peer:
            await wait_until(lambda: source.stats.reconnects == 1)
            await peer.send(second, batch=128)
            np.testing.assert_array_equal(await collect(source, second.size), second)
            await source.aclose()  # before this peer goes away too
    finally:
        await source.aclose()
    stats = source.stats
    assert (stats.connects, stats.reconnects, stats.disconnects) == (2, 1, 1)
    assert stats.last_gap_s > 0 and stats.disconnected_s == pytest.approx(stats.last_gap_s)
    assert stats.clock_rebases == 0 and stats.dropped_backwards == 0
    published = stats.as_dict()
    assert published["reconnects"] == 1 and published["disconnected_s"] == stats.disconnected_s
    assert "gap_started" not in published


async def test_out_of_sensor_and_backwards_events_are_dropped_and_counted(tmp_path):
    port = free_port()
    batches = [
        make_events([100, 101, 102], [0, 1, 2], [0, 1, 2], [1, 0, 1]),
        # (1000, 1000) and (-3, 2) are outside a 32x24 sensor (dv sends int16 coordinates)
        np.array([(200, 1000, 1000, 1), (201, -3, 2, 0), (202, 5, 5, 1)], dtype="i8,i2,i2,u1"),
        make_events([150, 300], [3, 4], [3, 4], [0, 1]),  # 150 goes back in time
    ]
    async with DvPeer(port, 32, 24, tmp_path) as peer, open_uri(f"dv://127.0.0.1:{port}") as source:
        for batch in batches:
            await peer.send(batch, batch=16)
        received = await collect(source, 5)
    assert received["t"].tolist() == [100, 101, 102, 202, 300]
    assert source.stats.dropped_out_of_bounds == 2
    assert source.stats.dropped_backwards == 1


async def test_backwards_error_policy_raises(tmp_path):
    port = free_port()
    uri = f"dv://127.0.0.1:{port}?backwards=error"
    async with DvPeer(port, 32, 24, tmp_path) as peer, open_uri(uri) as source:
        await peer.send(make_events([100, 101], [0, 1], [0, 1], [1, 1]), batch=16)
        await peer.send(make_events([90], [0], [0], [0]), batch=16)
        assert (await collect(source, 2))["t"].tolist() == [100, 101]
        with pytest.raises(EventDataError, match=r"backwards \(101 us -> 90 us"):
            await asyncio.wait_for(source.__anext__(), 10)


async def test_no_server_is_a_clear_error_unless_waiting():
    port = free_port()
    with pytest.raises(SourceUnavailableError, match=rf"127.0.0.1:{port}.*wait=true"):
        async with open_uri(f"dv://127.0.0.1:{port}"):
            pass
    source = open_uri(f"dv://127.0.0.1:{port}?wait=true&max_retries=2", **FAST)
    with pytest.raises(SourceUnavailableError, match="gave up after 3 failed connection attempts"):
        await source.__aenter__()
    assert source.stats.failed_attempts == 3


async def _silent(reader, writer):
    await reader.read()


async def _chatty(reader, writer):
    writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    await writer.drain()
    await reader.read()


@pytest.mark.parametrize(
    ("handler", "error"),
    [
        (_silent, "sent no DV stream header within 0.3 s"),
        (_chatty, "is not a DV stream server"),
    ],
)
async def test_a_server_that_is_not_dv_is_refused_without_freezing(handler, error):
    # dv-processing's NetworkReader would block forever holding the GIL on such a server.
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(SourceUnavailableError, match=error):
            async with open_uri(f"dv://127.0.0.1:{port}", connect_timeout_s=0.3):
                pass
    finally:
        server.close()


async def test_closing_stops_without_reconnecting(tmp_path):
    port = free_port()
    async with DvPeer(port, 32, 24, tmp_path) as peer:
        source = open_uri(f"dv://127.0.0.1:{port}", **FAST)
        async with source:
            await peer.send(random_events(10, 32, 24), batch=10)
            await collect(source, 10)
        assert source.stats.disconnects == 0 and source.stats.failed_attempts == 0
        with pytest.raises(StopAsyncIteration):
            await source.__anext__()
