"""Local sinks, fan-out, the outbox and sink specs (no broker needed; see test_mqtt.py)."""

from __future__ import annotations

import asyncio
import io

import pytest
from pipeline_helpers import make_decision

from spikecut.errors import ConfigError, SinkError
from spikecut.pipeline.decision import Decision, StatsMeter
from spikecut.pipeline.sinks import (
    FanoutSink,
    JsonlSink,
    MqttSettings,
    MqttSink,
    SinkCounters,
    StdoutSink,
    TlsOptions,
    open_sink,
    open_sinks,
)
from spikecut.pipeline.sinks.outbox import Message, Outbox


async def test_stdout_sink_writes_one_json_line_per_decision(capsys):
    async with open_sink("-") as sink:
        published = [await sink.publish(make_decision(seq)) for seq in range(3)]
        await sink.publish_stats(StatsMeter("cam0").snapshot())  # decisions only
    lines = capsys.readouterr().out.splitlines()
    assert [Decision.from_json(line) for line in lines] == published
    assert all(d.latency_ms is not None and d.latency_ms >= 0 for d in published)
    assert sink.counters.published == 3


async def test_jsonl_sink_appends_and_flushes_each_decision(tmp_path):
    path = tmp_path / "decisions.jsonl"
    path.write_text('{"cut off mid-wri')  # a crash left half a line behind
    async with JsonlSink(path) as sink:
        first = await sink.publish(make_decision(0))
        # flushed: another reader sees it while the sink is still open
        assert Decision.from_json(path.read_text().splitlines()[1]) == first
    async with open_sink(f"file:{path}") as sink:
        second = await sink.publish(make_decision(1))
    lines = path.read_text().splitlines()
    assert lines[0] == '{"cut off mid-wri'
    assert [Decision.from_json(line) for line in lines[1:]] == [first, second]


async def test_jsonl_sink_reports_an_unwritable_path(tmp_path):
    with pytest.raises(SinkError, match="missing"):
        async with JsonlSink(tmp_path / "missing" / "d.jsonl"):
            pass


async def test_publish_on_a_closed_sink_is_an_error():
    sink = StdoutSink(io.StringIO())
    with pytest.raises(SinkError, match="not open"):
        await sink.publish(make_decision())


class Broken:
    name = "broken"
    counters = SinkCounters()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info):
        pass

    async def publish(self, decision):
        raise SinkError("broken: disk full")

    async def publish_stats(self, stats):
        pass


async def test_fanout_stamps_once_and_survives_a_failing_sink():
    first, second = io.StringIO(), io.StringIO()
    fanout = FanoutSink(StdoutSink(first), Broken(), StdoutSink(second))
    async with fanout:
        with pytest.raises(SinkError, match="disk full"):
            await fanout.publish(make_decision(5))
    # both healthy sinks got the decision, with the same latency
    assert first.getvalue() == second.getvalue() != ""
    assert Decision.from_json(first.getvalue()).latency_ms is not None
    assert fanout.counters.published == 2  # summed over the sinks


async def test_fanout_counters_merge_per_stream_drops():
    offline = MqttSink(
        "mqtt://127.0.0.1:1/x", outbox_size=1, require_connection=False, flush_timeout_s=0.1
    )
    fanout = FanoutSink(StdoutSink(io.StringIO()), offline)
    async with fanout:
        for seq in range(3):
            await fanout.publish(make_decision(seq))
        counters = fanout.counters
        assert (counters.published, counters.pending, counters.dropped) == (3, 1, 2)
        assert counters.dropped_by_stream == {"cam0": 2}


async def test_open_sinks_combines_specs(tmp_path):
    assert isinstance(open_sinks([]), StdoutSink)
    assert isinstance(open_sinks(["stdout"]), StdoutSink)
    both = open_sinks([str(tmp_path / "a.jsonl"), "mqtt://127.0.0.1/x"])
    assert isinstance(both, FanoutSink)
    assert [type(s) for s in both.sinks] == [JsonlSink, MqttSink]


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("", "expected"),
        ("http://host/x", "unknown scheme 'http'"),
        ("file:", "needs a path"),
        ("mqtt://", "no host"),
        ("mqtt:/host/x", "no host"),
        ("mqtt://host:99999/x", "mqtt://host:99999/x"),
        ("mqtt://host:port/x", "mqtt://host:port/x"),
        ("mqtt://host/a/+/b", "topic prefix"),
        ("mqtt://host/a//b", "topic prefix"),
        ("mqtt://host/$SYS", "topic prefix"),
        ("mqtt://host/x?qos=3", "qos must be 0, 1 or 2"),
        ("mqtt://host/x?qos=one", "qos='one'"),
        ("mqtt://host/x?policy=drop_newest", "policy must be one of"),
        ("mqtt://host/x?outbox=0", "outbox_size must be >= 1"),
        ("mqtt://host/x?colour=red", "unknown option 'colour'"),
        ("mqtt://host/x?instance=a/b", "instance 'a/b'"),
        ("mqtt://host/x?ca=/etc/ca.pem", "TLS options need mqtts://"),
        ("mqtts://host/x?cert=/c.pem", "both cert= and key="),
        ("mqtts://host/x?insecure=maybe", "insecure='maybe'"),
        ("mqtts://host/x?ca=/nonexistent/ca.pem", "/nonexistent/ca.pem"),
    ],
)
def test_bad_sink_specs_raise_config_error_naming_the_value(spec, words):
    with pytest.raises(ConfigError) as caught:
        open_sink(spec)
    assert words in str(caught.value)


def test_passwords_never_appear_in_errors_or_names():
    with pytest.raises(ConfigError) as caught:
        open_sink("mqtt://alice:s3cret@host:99999/x")
    assert "s3cret" not in str(caught.value) and "alice:***@" in str(caught.value)
    sink = open_sink("mqtt://alice:s3cret@host/x")
    assert "s3cret" not in sink.name and "s3cret" not in repr(sink.settings)
    assert sink.settings.password == "s3cret"


def test_mqtt_urls_parse_into_settings():
    settings = MqttSettings.from_url(
        "mqtt://us%40er:p%3Ass@broker.local/plant/line1?qos=2&instance=edge-7&outbox=50"
        "&policy=block"
    )
    assert (settings.host, settings.port, settings.prefix) == ("broker.local", 1883, "plant/line1")
    assert (settings.username, settings.password) == ("us@er", "p:ss")
    assert (settings.qos, settings.instance, settings.outbox_size) == (2, "edge-7", 50)
    assert settings.policy == "block" and settings.tls is None
    assert MqttSettings.from_url("mqtt://[::1]").url == "mqtt://[::1]:1883/spikecut"
    secure = MqttSettings.from_url("mqtts://h:8884/p?ca=/ca.pem&cert=/c.pem&key=/k.pem&insecure=1")
    assert secure.port == 8884
    assert secure.tls == TlsOptions("/ca.pem", "/c.pem", "/k.pem", insecure=True)
    assert MqttSettings.from_url("mqtts://h").tls == TlsOptions() and secure.url.startswith("mqtts")
    # keyword options (what the CLI passes) override the query
    assert MqttSettings.from_url("mqtt://h/p?qos=0", qos=1).qos == 1
    with pytest.raises(ConfigError, match="unknown option"):
        MqttSettings.from_url("mqtt://h", colour="red")


def test_mqtt_sinks_get_unique_client_ids_and_per_instance_status_topics():
    first, second = open_sink("mqtt://h/p"), open_sink("mqtt://h/p")
    assert first.client_id != second.client_id
    assert first.client_id.startswith("spikecut-")
    assert first.status_topic == f"p/status/{first.client_id}" != second.status_topic
    assert open_sink("mqtt://h/p?instance=edge-7").status_topic == "p/status/edge-7"
    assert first.topic("cam0", "decision") == "p/cam0/decision"


def message(stream: str = "s", n: int = 0) -> Message:
    return Message(topic=f"t/{stream}", payload=str(n).encode(), qos=1, stream=stream)


async def test_outbox_drop_oldest_counts_per_stream():
    outbox = Outbox(3, "drop_oldest")
    for n in range(5):
        await outbox.put(message("a" if n < 2 else "b", n))
    assert len(outbox) == 3 and outbox.dropped == 2
    assert outbox.dropped_by_stream == {"a": 2}
    sent = [(await outbox.next_unsent())[1].payload for _ in range(3)]
    assert sent == [b"2", b"3", b"4"]


async def test_outbox_keeps_messages_until_acknowledged_and_resends_them_in_order():
    outbox = Outbox(10, "drop_oldest")
    for n in range(4):
        await outbox.put(message(n=n))
    ids = [(await outbox.next_unsent())[0] for _ in range(4)]
    await outbox.ack(ids[1])
    outbox.begin_connection()  # new connection: everything not acknowledged goes again
    again = [(await outbox.next_unsent())[1].payload for _ in range(3)]
    assert again == [b"0", b"2", b"3"]
    assert await outbox.ack(ids[1]) is None  # a late duplicate ack is harmless


async def test_outbox_block_policy_waits_for_room():
    outbox = Outbox(2, "block")
    await outbox.put(message(n=0))
    await outbox.put(message(n=1))
    third = asyncio.create_task(outbox.put(message(n=2)))
    await asyncio.wait_for(outbox.wait_until(lambda o: o.blocked == 1), 5)
    assert not third.done() and len(outbox) == 2
    first_id, _ = await outbox.next_unsent()
    await outbox.ack(first_id)
    await asyncio.wait_for(third, 5)
    assert len(outbox) == 2 and outbox.dropped == 0
    assert [(await outbox.next_unsent())[1].payload for _ in range(2)] == [b"1", b"2"]
