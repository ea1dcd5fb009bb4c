"""The MQTT sink against a real mosquitto: schema on the wire, outages, last will, two processes,
TLS (certificates made by the openssl CLI).

Every wait is an event or a condition with a timeout; nothing assumes how long a step takes.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aiomqtt
import pytest
from pipeline_helpers import make_decision

from spikecut.errors import SinkError
from spikecut.pipeline.decision import Decision, Stats, StatsMeter
from spikecut.pipeline.sinks import MqttSink, TlsOptions, open_sink

REPO = Path(__file__).resolve().parents[1]
PREFIX = "test/spikecut"

pytestmark = pytest.mark.timeout(60)


async def until(condition: Callable[[], bool], timeout_s: float = 20, what: str = "") -> None:
    """Poll `condition` until it holds; fail after `timeout_s` (a bound, not a timing guess)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what or condition}")
        await asyncio.sleep(0.01)


class Collector:
    """A subscriber that keeps every message and reconnects across broker restarts.

    `persistent=True` uses a persistent session (fixed client id, clean_session=False, QoS 1), so
    the broker queues decisions for it while it is disconnected.
    """

    def __init__(self, port: int, *topics: str, persistent: bool = False, tls_context=None):
        self.port = port
        self.topics = topics
        self.persistent = persistent
        self.tls_context = tls_context
        self.client_id = f"collector-{id(self):x}"
        self.messages: list[aiomqtt.Message] = []
        self.subscriptions = 0
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> Collector:
        self._task = asyncio.create_task(self._run())
        await until(lambda: self.subscriptions > 0, what="the collector to subscribe")
        return self

    async def __aexit__(self, *exc_info) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    "127.0.0.1",
                    self.port,
                    identifier=self.client_id,
                    clean_session=not self.persistent,
                    tls_context=self.tls_context,
                ) as client:
                    for topic in self.topics:
                        await client.subscribe(topic, qos=1)
                    self.subscriptions += 1
                    async for message in client.messages:
                        self.messages.append(message)
            except aiomqtt.MqttError:
                await asyncio.sleep(0.05)  # broker away: try again

    def payloads(self, suffix: str) -> list[bytes]:
        return [bytes(m.payload) for m in self.messages if str(m.topic).endswith(suffix)]

    def decisions(self) -> list[Decision]:
        return [Decision.from_json(p) for p in self.payloads("/decision")]

    def seqs(self, stream: str = "cam0") -> list[int]:
        return [d.seq for d in self.decisions() if d.stream == stream]

    def statuses(self, topic: str) -> list[str]:
        return [bytes(m.payload).decode() for m in self.messages if str(m.topic) == topic]


async def retained(port: int, topic: str) -> str:
    """The retained payload of `topic`, as a fresh subscriber sees it."""
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe(topic, qos=1)
        message = await asyncio.wait_for(anext(aiter(client.messages)), 10)
        assert message.retain
        return bytes(message.payload).decode()


async def test_decisions_and_stats_arrive_with_the_schema(mosquitto):
    url = mosquitto.url(PREFIX)
    async with Collector(mosquitto.port, f"{PREFIX}/#") as collector:
        async with MqttSink(url) as sink:
            assert sink.connected
            published = [
                await sink.publish(make_decision(seq, f"cam{seq % 2}")) for seq in range(6)
            ]
            meter = StatsMeter("cam0")
            meter.add_events(1_000)
            stats = meter.snapshot()
            await sink.publish_stats(stats)
            await until(lambda: len(collector.decisions()) == 6, what="6 decisions")
            await until(lambda: collector.payloads("/stats"), what="stats")
            await until(lambda: sink.counters.published == 6, what="6 acknowledgements")
        topics = [str(m.topic) for m in collector.messages if str(m.topic).endswith("/decision")]
        assert topics == [f"{PREFIX}/cam{seq % 2}/decision" for seq in range(6)]
        received = collector.decisions()
        assert received == published  # every field, latency included, survives the wire
        assert all(d.latency_ms is not None for d in received)
        assert [m.qos for m in collector.messages if str(m.topic).endswith("/decision")] == [1] * 6
        assert Stats.from_json(collector.payloads(f"{PREFIX}/cam0/stats")[0]) == stats
        await until(lambda: collector.statuses(sink.status_topic) == ["online", "offline"])
    assert await retained(mosquitto.port, sink.status_topic) == "offline"
    counters = sink.counters
    assert (counters.pending, counters.dropped, counters.undelivered) == (0, 0, 0)
    assert (counters.connects, counters.disconnects, counters.stats_published) == (1, 0, 1)


async def test_broker_killed_and_restarted_loses_no_decision(mosquitto):
    """A: acknowledged before the outage. B: sent to a frozen broker, never acknowledged, so they
    die with it (SIGKILL) and must be resent. C: published while no broker runs. The subscriber
    has a persistent session saved to the broker's database, so after the restart the broker
    queues what arrives for it whatever the order in which the two clients come back."""
    async with Collector(mosquitto.port, f"{PREFIX}/+/decision", persistent=True) as collector:
        mosquitto.save()  # the subscription survives the SIGKILL below
        async with MqttSink(mosquitto.url(PREFIX), backoff_max_s=0.5, flush_timeout_s=20) as sink:
            for seq in range(20):
                await sink.publish(make_decision(seq))
            await until(lambda: sorted(collector.seqs()) == list(range(20)), what="batch A")
            await until(lambda: sink.counters.published == 20, what="batch A acknowledged")

            mosquitto.pause()
            for seq in range(20, 30):
                await sink.publish(make_decision(seq))
            await until(lambda: sink.counters.sent == 30, what="batch B on the wire")
            assert sink.counters.pending == 10  # in flight, unacknowledged
            mosquitto.kill()
            await until(lambda: not sink.connected, what="the sink to notice")

            for seq in range(30, 40):
                await sink.publish(make_decision(seq))
            assert sink.counters.pending == 20
            mosquitto.start()
            await until(lambda: sink.counters.pending == 0, what="the outbox to drain")
            await until(lambda: set(collector.seqs()) == set(range(40)), what="all 40 decisions")
        counters = sink.counters
        assert counters.resent == 10  # exactly batch B
        assert (counters.connects, counters.disconnects) == (2, 1)
        assert (counters.published, counters.dropped, counters.undelivered) == (40, 0, 0)
        assert len(collector.seqs()) == 40  # nothing was acknowledged twice: no duplicates


CHILD = """
import asyncio, json, signal, sys, time
from spikecut.pipeline.decision import Decision
from spikecut.pipeline.sinks import MqttSink

async def main(url, stream, count):
    # Ctrl-C cancels the work; leaving `async with` flushes, says offline and disconnects
    asyncio.get_running_loop().add_signal_handler(signal.SIGINT, asyncio.current_task().cancel)
    try:
        async with MqttSink(url) as sink:
            hello = {"client_id": sink.client_id, "status": sink.status_topic}
            print(json.dumps(hello), flush=True)
            for seq in range(count):
                await sink.publish(Decision(
                    stream=stream, seq=seq, label=1, label_name="one", gap=1.0, threshold=None,
                    exit="forced", timesteps=4, max_timesteps=4, segment_start_us=0,
                    segment_end_us=1, events=1, synops=0, model="m",
                    window_closed_ns=time.monotonic_ns()))
            await asyncio.Event().wait()
    except asyncio.CancelledError:
        pass
    counters = sink.counters
    print(json.dumps({k: getattr(counters, k) for k in
                      ("published", "connects", "disconnects", "undelivered")}), flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


class Child:
    """A separate Python process publishing `count` decisions through `MqttSink`, then idling
    until SIGINT (Ctrl-C: clean shutdown) or SIGKILL."""

    def __init__(self, url: str, stream: str, count: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", CHILD, url, stream, str(count)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    async def line(self) -> dict:
        text = await asyncio.wait_for(asyncio.to_thread(self.process.stdout.readline), 30)
        if not text:
            raise AssertionError(
                f"child exited: {self.process.wait()}\n{self.process.stderr.read()}"
            )
        return json.loads(text)

    async def stop(self, signum: int) -> int:
        self.process.send_signal(signum)
        return await asyncio.wait_for(asyncio.to_thread(self.process.wait), 30)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()
        self.process.stderr.close()


async def test_last_will_marks_a_killed_process_offline(mosquitto):
    async with Collector(mosquitto.port, f"{PREFIX}/status/+") as collector:
        child = Child(mosquitto.url(PREFIX), "cam0", 1)
        try:
            status = (await child.line())["status"]
            await until(lambda: collector.statuses(status) == ["online"], what="online")
            assert await child.stop(signal.SIGKILL) == -signal.SIGKILL
            await until(lambda: collector.statuses(status) == ["online", "offline"], what="will")
        finally:
            child.close()
    assert await retained(mosquitto.port, status) == "offline"


async def test_two_processes_share_one_broker_without_fighting(mosquitto):
    url = mosquitto.url(PREFIX)
    async with Collector(mosquitto.port, f"{PREFIX}/#") as collector:
        children = [Child(url, f"proc{n}", 20) for n in range(2)]
        try:
            hello = [await child.line() for child in children]
            assert hello[0]["client_id"] != hello[1]["client_id"]
            assert hello[0]["status"] != hello[1]["status"]
            await until(lambda: len(collector.decisions()) == 40, what="40 decisions")
            assert (
                sorted(collector.seqs("proc0"))
                == sorted(collector.seqs("proc1"))
                == list(range(20))
            )
            # one dies: only its own status goes offline
            assert await children[1].stop(signal.SIGKILL) == -signal.SIGKILL
            await until(lambda: collector.statuses(hello[1]["status"])[-1:] == ["offline"])
            assert await retained(mosquitto.port, hello[0]["status"]) == "online"
            # the survivor was never kicked off and shuts down cleanly on Ctrl-C
            assert await children[0].stop(signal.SIGINT) == 0
            report = await children[0].line()
            assert report == {"published": 20, "connects": 1, "disconnects": 0, "undelivered": 0}
            await until(lambda: collector.statuses(hello[0]["status"]) == ["online", "offline"])
        finally:
            for child in children:
                child.close()


async def test_full_outbox_drops_the_oldest_and_counts_them(mosquitto):
    async with Collector(mosquitto.port, f"{PREFIX}/+/decision", persistent=True) as collector:
        mosquitto.stop()  # clean stop: the collector's session is saved
        sink = MqttSink(mosquitto.url(PREFIX), outbox_size=5, require_connection=False)
        async with sink:
            assert not sink.connected
            for seq in range(8):
                await sink.publish(make_decision(seq, "cam0" if seq < 2 else "cam1"))
            counters = sink.counters
            assert (counters.pending, counters.dropped) == (5, 3)
            assert counters.dropped_by_stream == {"cam0": 2, "cam1": 1}
            mosquitto.start()
            await until(lambda: sink.counters.pending == 0, what="the outbox to drain")
            await until(lambda: len(collector.decisions()) == 5, what="5 decisions")
        assert [d.seq for d in collector.decisions()] == [3, 4, 5, 6, 7]


async def test_full_outbox_blocks_publish_under_the_block_policy(mosquitto):
    async with Collector(mosquitto.port, f"{PREFIX}/+/decision", persistent=True) as collector:
        mosquitto.stop()
        sink = MqttSink(
            mosquitto.url(PREFIX), outbox_size=2, policy="block", require_connection=False
        )
        async with sink:
            await sink.publish(make_decision(0))
            await sink.publish(make_decision(1))
            third = asyncio.create_task(sink.publish(make_decision(2)))
            await until(lambda: sink.counters.blocked == 1, what="publish to block")
            assert not third.done()
            mosquitto.start()
            await asyncio.wait_for(third, 20)
            await until(lambda: len(collector.decisions()) == 3, what="3 decisions")
        assert [d.seq for d in collector.decisions()] == [0, 1, 2]
        assert sink.counters.dropped == 0


async def test_unreachable_broker_fails_fast_or_keeps_decisions(mosquitto):
    mosquitto.stop()
    with pytest.raises(SinkError, match="cannot connect"):
        async with MqttSink(mosquitto.url(PREFIX)):
            pass
    sink = MqttSink(mosquitto.url(PREFIX), require_connection=False, flush_timeout_s=0.2)
    async with sink:
        await sink.publish(make_decision(0))
        await sink.publish(make_decision(1))
        for _ in range(3):  # only the latest stats per stream wait for a connection
            await sink.publish_stats(StatsMeter("cam0").snapshot())
        assert sink.counters.stats_skipped == 2
    assert sink.counters.undelivered == 2  # counted and logged, not silently lost
    with pytest.raises(SinkError, match="not open"):
        await sink.publish(make_decision(2))


async def test_open_sink_mqtt_url_with_credentials_reaches_the_broker(mosquitto):
    # anonymous broker: the credentials are sent and ignored, the URL form is what is tested
    url = f"mqtt://user:pa%2Fss@127.0.0.1:{mosquitto.port}/{PREFIX}?qos=2&instance=edge-1"
    async with Collector(mosquitto.port, f"{PREFIX}/#") as collector:
        async with open_sink(url) as sink:
            assert sink.settings.password == "pa/ss" and "pa/ss" not in sink.name
            await sink.publish(make_decision(0))
            await until(lambda: collector.decisions(), what="a decision")
        assert sink.status_topic == f"{PREFIX}/status/edge-1"
        assert [m.qos for m in collector.messages if str(m.topic).endswith("/decision")] == [1]


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> Path:
    """A throw-away CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is not installed: cannot make test certificates")
    directory = tmp_path_factory.mktemp("tls")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=spikecut test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    for name, extensions in (
        ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        (directory / f"{name}.ext").write_text(
            f"{extensions}\nauthorityKeyIdentifier=keyid\nbasicConstraints=CA:FALSE\n"
        )
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN=spikecut test {name}", cwd=directory)  # fmt: skip
        openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
            cwd=directory,
        )  # fmt: skip
    return directory


@pytest.fixture
def tls_broker(make_mosquitto, certificates):
    """Listener 0: TLS, client certificate required. Listener 1: TLS, server-side only."""
    server = (
        f"cafile {certificates / 'ca.pem'}\ncertfile {certificates / 'server.pem'}\n"
        f"keyfile {certificates / 'server.key'}"
    )
    return make_mosquitto([f"{server}\nrequire_certificate true", server])


def client_context(certificates: Path) -> ssl.SSLContext:
    return TlsOptions(
        str(certificates / "ca.pem"),
        str(certificates / "client.pem"),
        str(certificates / "client.key"),
    ).context()


async def test_mqtts_with_ca_and_client_certificate_delivers(tls_broker, certificates):
    url = (
        f"{tls_broker.url(PREFIX, 'mqtts')}?ca={certificates / 'ca.pem'}"
        f"&cert={certificates / 'client.pem'}&key={certificates / 'client.key'}"
    )
    context = client_context(certificates)
    async with Collector(tls_broker.port, f"{PREFIX}/#", tls_context=context) as collector:
        async with open_sink(url) as sink:
            sent = await sink.publish(make_decision(0))
            await until(lambda: collector.decisions(), what="a decision over TLS")
        assert collector.decisions() == [sent]


async def test_mqtts_refuses_an_unknown_certificate_authority(tls_broker):
    # listener 1 needs no client certificate; the system trust store does not know our CA
    with pytest.raises(SinkError, match="cannot connect.*certificate verify failed"):
        async with MqttSink(tls_broker.url(PREFIX, "mqtts", index=1)):
            pass


async def test_mqtts_insecure_skips_verification(tls_broker):
    async with MqttSink(f"{tls_broker.url(PREFIX, 'mqtts', index=1)}?insecure=1") as sink:
        await sink.publish(make_decision(0, "cam9"))
        await until(lambda: sink.counters.published == 1, what="an acknowledgement")


async def test_mqtts_without_client_certificate_is_refused_where_required(tls_broker, certificates):
    url = f"{tls_broker.url(PREFIX, 'mqtts')}?ca={certificates / 'ca.pem'}"
    with pytest.raises(SinkError, match="cannot connect"):
        async with MqttSink(url, connect_timeout_s=2):
            pass
