"""Decisions to an MQTT broker through aiomqtt, surviving broker outages and restarts.

URL: `mqtt://[user:pass@]host[:port][/prefix][?options]` (port 1883) or `mqtts://...` (TLS, port
8883). The prefix may have several levels (`/plant/line1`); it defaults to `spikecut`. Options,
as query parameters or keyword arguments (keywords win):

    qos=1             QoS of decisions (0, 1 or 2)
    instance=NAME     status topic id of this process (default: the client id)
    outbox=10000      decisions kept until acknowledged
    policy=drop_oldest|block   what publish does when the outbox is full
    ca=FILE cert=FILE key=FILE insecure=1   TLS (mqtts only); insecure skips all verification

Topics (`<stream>` is the decision's stream id, one topic level by construction):

    <prefix>/<stream>/decision   Decision JSON, QoS `qos` (1), not retained
    <prefix>/<stream>/stats      Stats JSON, QoS 0, not retained, whenever the runner reports
    <prefix>/status/<instance>   "online" / "offline", QoS 1, retained; "offline" is also the
                                 last will, published by the broker if this process dies

Several processes share a broker safely: each has its own client id
(`spikecut-<host>-<pid>-<random>`), so the broker never kicks one for the other, and its own
status topic, so one process's death (its will) marks only itself offline; subscribe to
`<prefix>/status/+` to see them all. Stream ids must be unique across the processes that share
a prefix. A dead instance leaves its retained "offline" behind; give a stable `instance=` to
reuse one status topic across restarts.

Delivery. Every decision goes into a bounded outbox and stays there until the broker
acknowledges it (PUBACK at QoS 1). Each connection is a fresh aiomqtt client with a clean
session: aiomqtt's `publish` never completes once its connection drops, and paho would only
resend in-flight messages on the same client object, so the outbox is what resends. After a
connection loss the sink reconnects with exponential backoff (with jitter) and sends every
unacknowledged decision again, oldest first, then new ones: at-least-once, so a subscriber may
see a decision twice and can drop repeats by (stream, seq). Stats are fire-and-forget: only the
latest per stream waits for a connection. Closing the sink waits up to `flush_timeout_s` for the
outbox to empty, publishes "offline" and disconnects cleanly (no will); what is still
unacknowledged then is counted in `counters.undelivered` and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import re
import secrets
import socket
import ssl
import time
from collections import deque
from dataclasses import dataclass, field, fields, replace
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import aiomqtt

from spikecut.errors import ConfigError, SinkError
from spikecut.pipeline.decision import Decision, Stats, check_stream_id, percentile
from spikecut.pipeline.sinks.base import SinkCounters
from spikecut.pipeline.sinks.outbox import POLICIES, Message, Outbox, Policy

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "spikecut"
ONLINE = b"online"
OFFLINE = b"offline"
_BAD_PREFIX_CHARS = re.compile(r"[+#\x00]")


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """TLS for `mqtts://`. No CA file: the system's trust store. `insecure`: verify nothing."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False

    def context(self) -> ssl.SSLContext:
        """An SSL context; unreadable files raise `ConfigError` naming the file."""
        option, path = "ca", self.ca_file
        try:
            context = ssl.create_default_context(cafile=self.ca_file)
            if self.cert_file is not None:
                option, path = "cert/key", f"{self.cert_file} / {self.key_file}"
                context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"MQTT TLS option {option}: cannot load {path}: {exc}") from None
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


@dataclass(frozen=True, slots=True)
class MqttSettings:
    """Everything an `MqttSink` needs; `from_url` parses the URL and its options."""

    host: str
    port: int
    prefix: str = DEFAULT_PREFIX
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: TlsOptions | None = None
    qos: int = 1
    instance: str | None = None
    outbox_size: int = 10_000
    policy: Policy = "drop_oldest"
    max_inflight: int = 20
    keepalive_s: int = 30
    connect_timeout_s: float = 10.0
    flush_timeout_s: float = 10.0
    backoff_min_s: float = 0.1
    backoff_max_s: float = 30.0
    # True: entering the sink fails fast with SinkError when the broker cannot be reached.
    # False: start offline and keep decisions in the outbox until the broker appears.
    require_connection: bool = True

    def __post_init__(self) -> None:
        problems = []
        if self.qos not in (0, 1, 2):
            problems.append(f"qos must be 0, 1 or 2, got {self.qos!r}")
        if self.policy not in POLICIES:
            problems.append(f"policy must be one of {', '.join(POLICIES)}, got {self.policy!r}")
        for name in ("outbox_size", "max_inflight", "keepalive_s"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("connect_timeout_s", "flush_timeout_s", "backoff_min_s", "backoff_max_s"):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be > 0, got {getattr(self, name)!r}")
        if problems:
            raise ConfigError(f"MQTT sink {self.url}: " + "; ".join(problems))
        _check_prefix(self.prefix, self.url)
        if self.instance is not None:
            _check_level("instance", self.instance, self.url)

    @property
    def url(self) -> str:
        """The broker URL with the password hidden, for messages and logs."""
        scheme = "mqtts" if self.tls is not None else "mqtt"
        user = ""
        if self.username is not None:
            user = self.username + (":***" if self.password is not None else "") + "@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{user}{host}:{self.port}/{self.prefix}"

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MqttSettings:
        """Parse `mqtt[s]://...`; keyword `options` (field names, or `tls=TlsOptions`) win."""
        shown = _redact(url)
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ConfigError(f"invalid MQTT URL {shown!r}: {exc}") from None
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ConfigError(f"invalid MQTT URL {shown!r}: scheme must be mqtt:// or mqtts://")
        if not parts.hostname:
            raise ConfigError(f"invalid MQTT URL {shown!r}: no host")
        if parts.fragment:
            raise ConfigError(f"invalid MQTT URL {shown!r}: unexpected fragment")
        query = _parse_query(parts.query, shown)
        tls_fields = {name: query.pop(key) for key, name in _TLS_QUERY.items() if key in query}
        if tls_fields and parts.scheme != "mqtts":
            raise ConfigError(f"invalid MQTT URL {shown!r}: TLS options need mqtts://")
        tls = options.pop("tls", None)
        if tls is None and parts.scheme == "mqtts":
            tls = TlsOptions(**tls_fields)
        elif tls is not None and parts.scheme != "mqtts":
            raise ConfigError(f"MQTT sink {shown!r}: TLS options need mqtts://")
        if (tls_fields.get("cert_file") is None) != (tls_fields.get("key_file") is None):
            raise ConfigError(f"invalid MQTT URL {shown!r}: give both cert= and key=")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"MQTT sink {shown!r}: unknown option(s) {', '.join(unknown)}")
        return cls(
            host=parts.hostname,
            port=port if port is not None else (8883 if parts.scheme == "mqtts" else 1883),
            prefix=unquote(parts.path.strip("/")) or DEFAULT_PREFIX,
            username=None if parts.username is None else unquote(parts.username),
            password=None if parts.password is None else unquote(parts.password),
            tls=tls,
            **{**query, **options},
        )


_TLS_QUERY = {"ca": "ca_file", "cert": "cert_file", "key": "key_file", "insecure": "insecure"}
_QUERY = {
    "qos": ("qos", int),
    "instance": ("instance", str),
    "outbox": ("outbox_size", int),
    "policy": ("policy", str),
}


def _parse_query(query: str, shown: str) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if key in _TLS_QUERY:
            if key == "insecure":
                if value.lower() not in ("1", "true", "yes", "0", "false", "no"):
                    raise ConfigError(f"invalid MQTT URL {shown!r}: insecure={value!r}")
                parsed[key] = value.lower() in ("1", "true", "yes")
            else:
                parsed[key] = value
        elif key in _QUERY:
            name, kind = _QUERY[key]
            try:
                parsed[name] = kind(value)
            except ValueError:
                raise ConfigError(f"invalid MQTT URL {shown!r}: {key}={value!r}") from None
        else:
            known = ", ".join([*_QUERY, *_TLS_QUERY])
            raise ConfigError(
                f"invalid MQTT URL {shown!r}: unknown option {key!r} (known: {known})"
            )
    return parsed


def _redact(url: str) -> str:
    """`url` with any password replaced by `***`."""
    return re.sub(r"^([a-z][a-z0-9+.-]*://[^/@:]*):[^/@]*@", r"\1:***@", url, flags=re.I)


def _check_level(what: str, level: str, url: str) -> None:
    try:
        check_stream_id(level)
    except ConfigError:
        raise ConfigError(
            f"MQTT sink {url}: {what} {level!r} must be one topic level of letters, digits "
            "and '_.:-'"
        ) from None


def _check_prefix(prefix: str, url: str) -> None:
    levels = prefix.split("/")
    if prefix.startswith("$") or _BAD_PREFIX_CHARS.search(prefix) or "" in levels:
        raise ConfigError(
            f"MQTT sink {url}: topic prefix {prefix!r} must not start with '$', contain '+', "
            "'#' or empty levels"
        )


def default_client_id() -> str:
    """`spikecut-<host>-<pid>-<random>`: unique per process, so no two clients kick each other."""
    host = re.sub(r"[^A-Za-z0-9_.-]+", "_", socket.gethostname())[:32] or "host"
    return f"spikecut-{host}-{os.getpid()}-{secrets.token_hex(3)}"


class MqttSink:
    """Publishes decisions and stats to an MQTT broker; see the module docstring.

    Use as `async with MqttSink("mqtt://host/prefix") as sink: await sink.publish(decision)`.
    """

    def __init__(self, url: str | MqttSettings, **options: Any) -> None:
        if isinstance(url, MqttSettings):
            self.settings = replace(url, **options) if options else url
        else:
            self.settings = MqttSettings.from_url(url, **options)
        self.name = self.settings.url
        self.client_id = default_client_id()
        self.instance = self.settings.instance or self.client_id
        self.status_topic = f"{self.settings.prefix}/status/{self.instance}"
        self._tls_context = None if self.settings.tls is None else self.settings.tls.context()
        self._outbox = Outbox(self.settings.outbox_size, self.settings.policy)
        self._stats: dict[str, bytes] = {}
        self._stats_waiting = asyncio.Event()
        self._stop = asyncio.Event()
        self._connected = asyncio.Event()
        self._first_connection: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._outbox_wait_ms: deque[float] = deque(maxlen=1024)
        self._published = 0
        self._sent = 0
        self._resent = 0
        self._connects = 0
        self._disconnects = 0
        self._stats_published = 0
        self._stats_skipped = 0
        self._undelivered = 0

    def topic(self, stream: str, kind: str) -> str:
        """`<prefix>/<stream>/<kind>` for kind `decision` or `stats`."""
        return f"{self.settings.prefix}/{stream}/{kind}"

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def counters(self) -> SinkCounters:
        waits = list(self._outbox_wait_ms)
        return SinkCounters(
            published=self._published,
            pending=len(self._outbox),
            dropped=self._outbox.dropped,
            dropped_by_stream=self._outbox.dropped_by_stream.copy(),
            blocked=self._outbox.blocked,
            sent=self._sent,
            resent=self._resent,
            connects=self._connects,
            disconnects=self._disconnects,
            stats_published=self._stats_published,
            stats_skipped=self._stats_skipped,
            undelivered=self._undelivered,
            outbox_wait_ms_p50=percentile(waits, 50),
            outbox_wait_ms_p99=percentile(waits, 99),
        )

    async def __aenter__(self) -> MqttSink:
        if self._task is not None:
            raise SinkError(f"{self.name}: sink is already open")
        self._stop = asyncio.Event()
        self._first_connection = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(), name=f"mqtt-sink {self.client_id}")
        if self.settings.require_connection:
            timeout_s = self.settings.connect_timeout_s
            try:
                # a little longer than the client's own timeout, so its error is the one we see
                await asyncio.wait_for(asyncio.shield(self._first_connection), timeout_s + 1)
            except (aiomqtt.MqttError, asyncio.TimeoutError) as exc:
                await self._halt()
                reason = str(exc) or "no answer"
                raise SinkError(
                    f"{self.name}: cannot connect to the broker: {reason} "
                    f"(connect_timeout_s={timeout_s:g})"
                ) from None
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is None:
            return
        if not self._task.done():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(
                    self._outbox.wait_until(lambda outbox: len(outbox) == 0),
                    self.settings.flush_timeout_s,
                )
        await self._halt()
        self._undelivered = len(self._outbox)
        if self._undelivered:
            log.warning(
                "%s: %d decision(s) not acknowledged by the broker when the sink closed",
                self.name,
                self._undelivered,
            )

    async def _halt(self) -> None:
        """Stop the connection task (it says offline and disconnects if connected).

        An unexpected exception that ended the task is raised here.
        """
        task, self._task = self._task, None
        self._stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), self.settings.connect_timeout_s + 5)
        except asyncio.TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        first = self._first_connection
        if first is not None and first.done() and not first.cancelled():
            first.exception()  # seen: the caller already reported it (no asyncio warning)
        elif first is not None:
            first.cancel()

    def _check_open(self) -> None:
        if self._task is None:
            raise SinkError(f"{self.name}: publish on a sink that is not open")
        if self._task.done() and not self._task.cancelled() and self._task.exception():
            raise SinkError(f"{self.name}: the connection task failed") from self._task.exception()

    async def publish(self, decision: Decision) -> Decision:
        """Stamp the latency and queue the decision; waits only under the `block` policy."""
        decision = decision.stamped()
        self._check_open()
        message = Message(
            topic=self.topic(decision.stream, "decision"),
            payload=decision.to_json().encode(),
            qos=self.settings.qos,
            stream=decision.stream,
        )
        await self._outbox.put(message)
        return decision

    async def publish_stats(self, stats: Stats) -> None:
        """Queue the latest stats of a stream (QoS 0); an unsent older one is replaced."""
        self._check_open()
        if stats.stream in self._stats:
            self._stats_skipped += 1
        self._stats[stats.stream] = stats.to_json().encode()
        self._stats_waiting.set()

    def _client(self) -> aiomqtt.Client:
        settings = self.settings
        status_will = aiomqtt.Will(self.status_topic, OFFLINE, qos=1, retain=True)
        client = aiomqtt.Client(
            settings.host,
            settings.port,
            username=settings.username,
            password=settings.password,
            identifier=self.client_id,
            will=status_will,
            clean_session=True,
            keepalive=settings.keepalive_s,
            timeout=settings.connect_timeout_s,
            max_inflight_messages=settings.max_inflight,
            tls_context=self._tls_context,
            # paho leaves Nagle on, which can hold a small PUBLISH behind an unacknowledged one
            # for a delayed-ACK period (~40 ms); brokers want the same (`set_tcp_nodelay true`)
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            logger=log.getChild("paho"),
        )
        client.pending_calls_threshold = settings.max_inflight + 10
        return client

    async def _run(self) -> None:
        """Connect, serve, reconnect with backoff until asked to stop."""
        settings = self.settings
        delay_s = settings.backoff_min_s
        attempts = 0
        while not self._stop.is_set():
            attempts += 1
            served = False
            try:
                async with self._client() as client:
                    self._connects += 1
                    served = True
                    if attempts > 1:
                        log.warning(
                            "%s: connected after %d attempt(s); %d decision(s) to send",
                            self.name,
                            attempts,
                            len(self._outbox),
                        )
                    attempts, delay_s = 0, settings.backoff_min_s
                    self._connected.set()
                    if not self._first_connection.done():
                        self._first_connection.set_result(None)
                    try:
                        await self._serve(client)
                    finally:
                        self._connected.clear()
                    with contextlib.suppress(aiomqtt.MqttError):
                        await client.publish(
                            self.status_topic, OFFLINE, qos=1, retain=True, timeout=2.0
                        )
                return
            except aiomqtt.MqttError as exc:
                if settings.require_connection and not self._first_connection.done():
                    self._first_connection.set_exception(exc)
                    return
                if served:
                    self._disconnects += 1
                    log.warning("%s: connection lost (%s); reconnecting", self.name, exc)
                else:
                    log.debug("%s: connection attempt %d failed: %s", self.name, attempts, exc)
            with contextlib.suppress(asyncio.TimeoutError):
                jittered_s = delay_s * (0.5 + random.random() / 2)
                await asyncio.wait_for(self._stop.wait(), jittered_s)
            delay_s = min(delay_s * 2, settings.backoff_max_s)

    async def _serve(self, client: aiomqtt.Client) -> None:
        """Send on one connection until it drops (raise MqttError) or the sink stops (return).

        "online" first, then every unacknowledged decision oldest first, at most `max_inflight`
        awaiting their PUBACK at once; stats whenever the runner reports.
        """
        self._outbox.begin_connection()
        slots = asyncio.Semaphore(self.settings.max_inflight)
        in_flight: set[asyncio.Task[None]] = set()
        broken: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def send(message_id: int, message: Message) -> None:
            try:
                await client.publish(
                    message.topic, message.payload, qos=message.qos, timeout=math.inf
                )
            except aiomqtt.MqttError as exc:
                if not broken.done():
                    broken.set_exception(exc)
                return
            finally:
                slots.release()
            if await self._outbox.ack(message_id) is not None:
                self._published += 1
                self._outbox_wait_ms.append((time.monotonic_ns() - message.enqueued_ns) / 1e6)

        async def send_decisions() -> None:
            await client.publish(self.status_topic, ONLINE, qos=1, retain=True, timeout=math.inf)
            while True:
                await slots.acquire()
                message_id, message = await self._outbox.next_unsent()
                message.attempts += 1
                self._sent += 1
                if message.attempts > 1:
                    self._resent += 1
                task = asyncio.create_task(send(message_id, message))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)

        async def send_stats() -> None:
            while True:
                await self._stats_waiting.wait()
                self._stats_waiting.clear()
                while self._stats:
                    stream = next(iter(self._stats))
                    payload = self._stats.pop(stream)
                    await client.publish(
                        self.topic(stream, "stats"), payload, qos=0, timeout=math.inf
                    )
                    self._stats_published += 1

        async def watch() -> None:
            # We subscribe to nothing: this raises MqttError when the connection drops (socket
            # error or missed keepalive), which no pending publish would ever report.
            async for _ in client.messages:
                pass

        tasks = [
            asyncio.create_task(coro)
            for coro in (watch(), send_decisions(), send_stats(), self._stop.wait())
        ]
        try:
            await asyncio.wait([*tasks, broken], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in [*tasks, *in_flight]:
                task.cancel()
            await asyncio.gather(*tasks, *in_flight, return_exceptions=True)
        errors = [task.exception() for task in tasks[:3] if task.done() and not task.cancelled()]
        if broken.done():
            errors.append(broken.exception())
        for error in errors:
            if error is not None:
                raise error
