"""`spikecut replay` and `spikecut live`: the runner behind a command line.

Naming, so that several processes can share one MQTT broker (see README, "Scaling out"):

- The process has an instance name, `--instance` (default: the short host name). It names the
  process's status topic `<prefix>/status/<instance>` (retained online/offline, with the last
  will) and prefixes its default stream ids.
- A stream's id is `--stream-id` as given, or `<instance>.<source>`, where `<source>` comes from the
  file name or the URI (`lab1.60001`, `lab1.dv-cam3-7777`). Different machines therefore never
  produce the same default id; on one machine, two processes need different `--instance` names.
- Before publishing, a process with an MQTT sink looks at its status topic: if another process is
  `online` there with the same instance name, it refuses to start (exit 2) instead of fighting
  over the topics. MQTT client ids are unique per process (`spikecut-<host>-<pid>-<random>`).

Ctrl-C (SIGINT) and SIGTERM stop the streams, flush what the sinks still hold (the MQTT outbox,
up to its flush timeout), publish `offline` and exit 0. A second signal skips the flush.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import re
import signal
import socket
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from spikecut.errors import ConfigError
from spikecut.pipeline.decision import check_stream_id, make_stream_id, percentile
from spikecut.pipeline.runner import (
    Runner,
    RunOptions,
    Segmentation,
    Stream,
    StreamModel,
    StreamReport,
    configure_torch,
)
from spikecut.pipeline.sinks import Sink, open_sinks
from spikecut.sources.base import EventSource

log = logging.getLogger("spikecut")

#: How long the instance check waits for a retained status after subscribing.
_STATUS_WAIT_S = 0.5


# --- names ---------------------------------------------------------------------------------------


def default_instance() -> str:
    """The short host name, made safe as one topic level."""
    host = socket.gethostname().split(".", 1)[0]
    return make_stream_id(re.sub(r"[^A-Za-z0-9_-]+", "-", host) or "host")


def source_slug(name: str) -> str:
    """A short, topic-safe name for a source: a file's stem, or scheme-host-port for a URI."""
    from spikecut.sources.uri import parse_uri

    spec = parse_uri(name)
    if spec.scheme == "file":
        return make_stream_id(Path(spec.path).name)
    scheme = spec.scheme.replace("raw+", "raw-")
    parts = [scheme]
    if spec.host:
        parts += [spec.host, str(spec.port)]
    elif spec.path:
        parts.append(Path(spec.path).name)
    elif spec.serial:
        parts.append(spec.serial)
    return make_stream_id("-".join(p.replace(".", "-") for p in parts))


def stream_ids(names: Sequence[str], instance: str, explicit: Sequence[str] | None) -> list[str]:
    """One id per source: `explicit` as given, else `<instance>.<slug>`, unique in the process."""
    if explicit:
        if len(explicit) != len(names):
            raise ConfigError(
                f"--stream-id given {len(explicit)} time(s) for {len(names)} stream(s): give one "
                "per stream, in order"
            )
        ids = [check_stream_id(i) for i in explicit]
    else:
        ids, seen = [], set()
        for name in names:
            base = f"{instance}.{source_slug(name)}"[:120]
            candidate, n = base, 1
            while candidate in seen:
                n += 1
                candidate = f"{base}-{n}"
            seen.add(candidate)
            ids.append(check_stream_id(candidate))
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise ConfigError(f"stream ids must be unique, repeated: {repeated}")
    return ids


def _is_mqtt(spec: str) -> bool:
    return spec.lower().startswith(("mqtt://", "mqtts://"))


def _instance(args: argparse.Namespace) -> str:
    """--instance, else an instance= in an MQTT URL, else the host name."""
    if args.instance:
        return check_stream_id(args.instance)
    from spikecut.pipeline.sinks import MqttSettings

    for spec in _sink_specs(args):
        if _is_mqtt(spec):
            given = MqttSettings.from_url(spec).instance
            if given:
                return given
    return default_instance()


def _sink_specs(args: argparse.Namespace) -> list[str]:
    specs = list(args.sink or [])
    if getattr(args, "mqtt", None):
        specs.append(args.mqtt)
    return specs


async def check_instance_free(url: str, instance: str) -> None:
    """Refuse to start when another process is `online` under this instance name on the broker.

    A broker that cannot be reached is left to the sink to report.
    """
    import aiomqtt

    from spikecut.pipeline.sinks import MqttSettings
    from spikecut.pipeline.sinks.mqtt import ONLINE, default_client_id

    settings = MqttSettings.from_url(url, instance=instance)
    topic = f"{settings.prefix}/status/{instance}"
    client = aiomqtt.Client(
        settings.host,
        settings.port,
        username=settings.username,
        password=settings.password,
        identifier=default_client_id() + "-check",
        tls_context=None if settings.tls is None else settings.tls.context(),
        timeout=settings.connect_timeout_s,
    )
    status = None
    try:
        async with client:
            await client.subscribe(topic, qos=1)
            with contextlib.suppress(asyncio.TimeoutError):
                message = await asyncio.wait_for(anext(aiter(client.messages)), _STATUS_WAIT_S)
                status = bytes(message.payload)
    except aiomqtt.MqttError:
        return
    if status == ONLINE:
        raise ConfigError(
            f"instance {instance!r} is already online on {settings.url} ({topic}): another "
            "spikecut process uses this name; give each process its own --instance"
        )


# --- running -------------------------------------------------------------------------------------


def segmentation_from(args: argparse.Namespace) -> Segmentation:
    return Segmentation(
        mode=args.segment,
        activity_rate=args.activity_rate,
        quiet_rate=args.quiet_rate,
        quiet_windows=args.quiet_windows,
    )


def load_model(args: argparse.Namespace) -> StreamModel:
    overrides: dict[str, Any] = {}
    if args.roi is not None:
        overrides["roi"] = args.roi
    if args.downsample is not None:
        overrides["downsample"] = args.downsample
    return StreamModel.load(args.model, **overrides)


class _OneLine(logging.Formatter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def format(self, record: logging.LogRecord) -> str:
        return f"{self.prefix}: {record.levelname.lower()}: {record.getMessage()}"


def setup_logging(command: str) -> None:
    """Warnings and errors on stderr as one line each: `spikecut replay: error: ...`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLine(f"spikecut {command}"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)


def run_command(
    args: argparse.Namespace,
    make_streams: Callable[[list[str]], list[Stream]],
    names: list[str],
) -> int:
    """Load the model, open the sinks, run the streams; the exit status."""
    setup_logging(args.command)
    configure_torch(args.threads)
    instance = _instance(args)
    ids = stream_ids(names, instance, args.stream_id)
    streams = make_streams(ids)
    model = load_model(args)
    options = RunOptions(
        segmentation=segmentation_from(args),
        cutoff=not args.no_cutoff,
        stats_interval_s=args.stats_interval or None,
    )
    specs = _sink_specs(args) or ["-"]
    sink = open_sinks(specs, instance=instance)
    runner = Runner(model, sink, options)
    mqtt_urls = [spec for spec in specs if _is_mqtt(spec)]
    interrupted = asyncio.run(serve(runner, streams, mqtt_urls, instance))
    return _summarise(args.command, list(runner.reports.values()), sink, interrupted)


async def serve(
    runner: Runner, streams: list[Stream], mqtt_urls: Sequence[str], instance: str
) -> bool:
    """Run `streams` inside the runner's sink until they end or a signal stops them (then the
    sink still flushes and says offline); True if a signal stopped them."""
    for url in mqtt_urls:
        await check_instance_free(url, instance)
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    interrupted = False
    work: asyncio.Future[list[StreamReport]] | None = None

    def stop() -> None:
        nonlocal interrupted
        if interrupted:  # a second signal: skip the flush
            main.cancel()
        interrupted = True
        if work is not None:
            work.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop)
    try:
        async with runner.sink:
            work = asyncio.ensure_future(runner.run(streams))
            if interrupted:
                work.cancel()
            try:
                await work
            except asyncio.CancelledError:
                if not interrupted:
                    raise
    except asyncio.CancelledError:
        if not interrupted:
            raise
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    return interrupted


def _summarise(command: str, reports: list[StreamReport], sink: Sink, interrupted: bool) -> int:
    decisions = sum(r.decisions for r in reports)
    cutoffs = sum(r.cutoffs for r in reports)
    steps = [t for r in reports for t in r.timesteps]
    latencies = [x for r in reports for x in r.latencies_ms]
    line = f"{len(reports)} stream(s), {decisions} decision(s) ({cutoffs} cutoff)"
    if steps:
        line += f", mean {sum(steps) / len(steps):.2f} timesteps"
    if latencies:
        p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
        line += f", latency p50 {p50:.2f} ms p99 {p99:.2f} ms"
    if interrupted:
        line += ", interrupted"
    failed = [r for r in reports if r.error is not None]  # each was logged when it happened
    if failed:
        line += f", {len(failed)} failed"
    print(f"spikecut {command}: {line}", file=sys.stderr)
    undelivered = sink.counters.undelivered
    if undelivered:
        print(
            f"spikecut {command}: warning: {undelivered} decision(s) not acknowledged by the "
            f"broker ({sink.name})",
            file=sys.stderr,
        )
    return 2 if failed else 0


# --- the two commands ----------------------------------------------------------------------------


def replay_command(args: argparse.Namespace) -> int:
    from spikecut.sources import open_source

    paths = [str(p) for p in args.paths]
    recording = args.segment == "recording"

    def sources(path_list: list[str]) -> Iterator[EventSource]:
        passes: Iterable[int] = itertools.count() if args.loop and recording else range(1)
        for _ in passes:
            for path in path_list:
                # In recording mode every pass is a new recording (its own origin); otherwise the
                # file loops inside one source, its timestamps shifted to keep increasing.
                yield open_source(path, speed=args.speed, loop=args.loop and not recording)

    if args.playlist:
        names = [paths[0] if len(paths) == 1 else "playlist"]
        return run_command(args, lambda ids: [Stream(ids[0], sources(paths))], names)
    return run_command(
        args, lambda ids: [Stream(i, sources([p])) for i, p in zip(ids, paths, strict=True)], paths
    )


def live_command(args: argparse.Namespace) -> int:
    from spikecut.sources.uri import open_uri

    if args.segment == "recording":
        raise ConfigError(
            "live sources have no end, so 'recording' segmentation does not apply: use "
            "--segment fixed or --segment activity"
        )
    uris = list(args.uris)

    def make(ids: list[str]) -> list[Stream]:
        return [Stream(i, [open_uri(uri)]) for i, uri in zip(ids, uris, strict=True)]

    return run_command(args, make, uris)


__all__ = [
    "check_instance_free",
    "default_instance",
    "live_command",
    "replay_command",
    "serve",
    "setup_logging",
    "source_slug",
    "stream_ids",
]
