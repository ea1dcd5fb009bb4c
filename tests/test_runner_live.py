"""A live DV network stream (a real dv-processing NetworkWriter on loopback, in its own process)
gives the same decisions as replaying the same events from a file."""

from __future__ import annotations

import asyncio
import io

import pytest
from live_peers import DvPeer, free_port
from pipeline_helpers import concatenate
from test_mqtt import until

from spikecut.pipeline.decision import Decision
from spikecut.pipeline.runner import Runner, RunOptions, Segmentation, Stream
from spikecut.pipeline.sinks import StdoutSink
from spikecut.sources import open_source, read_events, write_events
from spikecut.sources.events import StreamInfo
from spikecut.sources.uri import open_uri

pytest.importorskip("dv_processing", reason="the camera extra (dv-processing) is not installed")
pytestmark = pytest.mark.timeout(90)

# Everything but the wall-clock fields.
SAME = [
    "stream", "seq", "label", "label_name", "gap", "threshold", "exit", "timesteps",
    "max_timesteps", "segment_start_us", "segment_end_us", "events", "synops", "model",
]  # fmt: skip


async def test_dv_network_stream_decides_like_the_file_replay(recordings, model, tmp_path):
    events, _ = concatenate([read_events(p)[0] for p in recordings[:5]], gap_us=45_000)
    path = tmp_path / "five.npz"
    write_events(path, events, StreamInfo(34, 34, "five digits"))
    # Block instead of dropping windows (the live default) so nothing depends on CPU speed, and
    # give the wall clock 2 s of grace so only events close windows while the peer sends.
    options = RunOptions(
        segmentation=Segmentation("fixed"), policy="block", wall_grace_us=2_000_000
    )

    async def decide(source, peer: DvPeer | None = None, count: int = 0) -> list[Decision]:
        made: list[Decision] = []
        async with StdoutSink(io.StringIO()) as sink:
            runner = Runner(model, sink, options, on_decision=lambda d, info: made.append(d))
            work = asyncio.create_task(runner.run([Stream("cam", [source])]))
            if peer is None:
                await work
                return made
            # a NetworkWriter sends only to clients already connected
            await until(lambda: source.stats.connected, what="the DV connection")
            await peer.send(events, batch=512)
            await until(lambda: len(made) >= count, what=f"{count} live decisions")
            assert runner.reports["cam"].error is None
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
        return made

    from_file = await decide(open_source(path))
    # decisions whose every window was closed by a later event (the file's last segment ends in
    # a partial window that a live stream only closes on the wall clock)
    settled = [d for d in from_file if d.segment_end_us <= int(events["t"][-1])]
    assert len(settled) >= 8

    port = free_port()
    async with DvPeer(port, 34, 34, tmp_path) as peer:
        live = await decide(open_uri(f"dv://127.0.0.1:{port}"), peer, count=len(settled))
    for streamed, replayed in zip(live, settled, strict=False):
        assert {k: getattr(streamed, k) for k in SAME} == {k: getattr(replayed, k) for k in SAME}
