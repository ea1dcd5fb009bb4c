"""Where decisions go: stdout (default), a JSON-lines file, MQTT, or several at once.

`open_sink(spec)` names a sink the way the CLI does:

    -  or  stdout                       JSON lines on stdout
    mqtt://[user:pass@]host[:port][/prefix][?...]    MQTT (see `spikecut.pipeline.sinks.mqtt`)
    mqtts://...                         MQTT over TLS
    file:PATH  or  PATH                 JSON lines appended to PATH

Every sink is an async context manager; see `spikecut.pipeline.sinks.base` for the contract.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from spikecut.errors import ConfigError
from spikecut.pipeline.sinks.base import FanoutSink, JsonlSink, Sink, SinkCounters, StdoutSink
from spikecut.pipeline.sinks.mqtt import MqttSettings, MqttSink, TlsOptions, _redact

__all__ = [
    "FanoutSink",
    "JsonlSink",
    "MqttSettings",
    "MqttSink",
    "Sink",
    "SinkCounters",
    "StdoutSink",
    "TlsOptions",
    "open_sink",
    "open_sinks",
]

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+):")


def open_sink(spec: str, **mqtt_options: Any) -> Sink:
    """The sink `spec` names (not yet entered). `mqtt_options` go to `MqttSink` (e.g. `tls=`,
    `qos=`, `policy=`) and are ignored by the other sinks. Bad specs raise `ConfigError`."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"sink {spec!r}: expected '-', a file path or an mqtt:// URL")
    if spec in ("-", "stdout"):
        return StdoutSink()
    scheme = _SCHEME.match(spec)
    if scheme is None:
        return JsonlSink(spec)
    name = scheme.group(1).lower()
    if name in ("mqtt", "mqtts"):
        return MqttSink(spec, **mqtt_options)
    if name == "file":
        path = spec[len("file:") :]
        path = path[2:] if path.startswith("//") else path
        if not path:
            raise ConfigError(f"sink {spec!r}: file: needs a path")
        return JsonlSink(path)
    raise ConfigError(
        f"sink {_redact(spec)!r}: unknown scheme {name!r} (use -, stdout, file:PATH, a path, "
        "mqtt:// or mqtts://)"
    )


def open_sinks(specs: Sequence[str], **mqtt_options: Any) -> Sink:
    """One sink for several specs: stdout if none, the sink itself if one, else a fan-out."""
    sinks = [open_sink(spec, **mqtt_options) for spec in specs]
    if not sinks:
        return StdoutSink()
    return sinks[0] if len(sinks) == 1 else FanoutSink(*sinks)
