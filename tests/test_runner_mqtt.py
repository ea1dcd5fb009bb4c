"""The whole pipeline into a real mosquitto: decisions and stats on the wire with their schema, and
a broker killed and restarted in the middle of a stream without losing a QoS-1 decision."""

from __future__ import annotations

import asyncio

import pytest
from pipeline_helpers import concatenate
from test_mqtt import Collector, until

from spikecut.pipeline.decision import Decision, Stats
from spikecut.pipeline.runner import Runner, RunOptions, Segmentation, Stream
from spikecut.pipeline.sinks import MqttSink
from spikecut.sources import open_source, read_events, write_events
from spikecut.sources.events import StreamInfo

PREFIX = "test/pipeline"

pytestmark = pytest.mark.timeout(90)


async def test_decisions_and_stats_arrive_with_the_schema(mosquitto, recordings, model):
    published: list[Decision] = []
    async with Collector(mosquitto.port, f"{PREFIX}/#") as collector:
        async with MqttSink(mosquitto.url(PREFIX)) as sink:
            runner = Runner(
                model, sink, RunOptions(), on_decision=lambda d, info: published.append(d)
            )
            streams = [Stream(f"cam{i}", [open_source(p)]) for i, p in enumerate(recordings[:3])]
            reports = await runner.run(streams)
            await until(lambda: len(collector.decisions()) == 3, what="3 decisions")
            await until(lambda: len(collector.payloads("/stats")) == 3, what="3 final stats")
        received = {d.stream: d for d in collector.decisions()}  # schema-checked on parsing
        assert received == {d.stream: d for d in published}
        for report in reports:
            decision = received[report.stream_id]
            topic = f"{PREFIX}/{report.stream_id}/decision"
            assert [
                str(m.topic) for m in collector.messages if m.payload == decision.to_json().encode()
            ] == [topic]
            assert decision.latency_ms == report.latencies_ms[0]
        stats = [Stats.from_json(p) for p in collector.payloads("/stats")]
        assert {s.stream: (s.decisions, s.windows) for s in stats} == {
            r.stream_id: (1, r.windows) for r in reports
        }
        await until(lambda: collector.statuses(sink.status_topic) == ["online", "offline"])
    assert sink.counters.undelivered == 0


async def test_broker_killed_and_restarted_mid_stream_loses_no_decision(
    mosquitto, recordings, model, tmp_path
):
    # 12 digits back to back (~4 s of sensor time) replayed at 2x real time in fixed segments:
    # decisions keep coming while the broker is dead.
    events, _ = concatenate([read_events(p)[0] for p in recordings], gap_us=40_000)
    path = tmp_path / "digits.npz"
    write_events(path, events, StreamInfo(34, 34, "digits"))
    made: list[Decision] = []
    async with Collector(mosquitto.port, f"{PREFIX}/+/decision", persistent=True) as collector:
        mosquitto.save()  # the collector's subscription survives the SIGKILL
        sink = MqttSink(mosquitto.url(PREFIX), backoff_min_s=0.05, backoff_max_s=0.2)
        async with sink:
            runner = Runner(
                model,
                sink,
                RunOptions(segmentation=Segmentation("fixed"), stats_interval_s=0.2),
                on_decision=lambda d, info: made.append(d),
            )
            work = asyncio.create_task(runner.run([Stream("cam", [open_source(path, speed=2.0)])]))
            await until(lambda: len(collector.seqs("cam")) >= 3, what="first decisions")
            mosquitto.kill()
            down_at = len(made)
            await until(lambda: not sink.connected, what="the sink to notice")
            await until(lambda: len(made) >= down_at + 4, what="decisions during the outage")
            assert not work.done()
            mosquitto.start()
            (report,) = await asyncio.wait_for(work, 30)
            await until(lambda: sink.counters.pending == 0, what="the outbox to drain")
        seqs = collector.seqs("cam")
        assert report.error is None and report.decisions == len(made) > down_at + 4
        assert sorted(set(seqs)) == list(range(len(made)))  # every decision arrived
        assert {d.seq: d for d in collector.decisions()} == {d.seq: d for d in made}
    counters = sink.counters
    assert counters.disconnects >= 1 and counters.connects >= 2
    assert (counters.dropped, counters.undelivered) == (0, 0)
