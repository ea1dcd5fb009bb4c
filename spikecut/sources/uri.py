"""Name any event source with one string: `open_uri(uri, **options) -> EventSource`.

    PATH | file:PATH | file:///ABS/PATH     a recording (any format the readers know)
    dv://HOST[:PORT]                         DV / dv-processing network stream (port 7777)
    raw+tcp://HOST:PORT                      Prophesee RAW (EVT3/EVT2) bytes from a TCP server
    raw+pipe:PATH                            ... from a named pipe (or a file/device, read once)
    raw+stdin:                               ... from standard input
    camera:[SERIAL]                          a USB event camera (first found, or by serial)

Options go in the query string (`dv://cam:7777?wait=true&backoff_max_s=10`) or as keyword
arguments (typed values); giving one both ways with different values is an error. Which
options each scheme accepts is in `SCHEME_OPTIONS`; `spikecut.sources.live` documents them.
A bare path is taken literally; in a `file:` URI, percent-escapes are decoded and `?` starts the
query.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from spikecut.errors import ConfigError, SourceUnavailableError
from spikecut.sources.base import EventSource

SCHEMES = ("file", "dv", "raw+tcp", "raw+pipe", "raw+stdin", "camera")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
        return value.lower() in _TRUE
    raise ConfigError(f"option {name!r} must be true or false, got {value!r}")


def _int(name: str, value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
        return int(value)
    raise ConfigError(f"option {name!r} must be an integer, got {value!r}")


def _optional_int(name: str, value: Any) -> int | None:
    if value is None or (isinstance(value, str) and value.lower() == "none"):
        return None
    return _int(name, value)


def _float(name: str, value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise ConfigError(f"option {name!r} must be a number, got {value!r}")


def _choice(*allowed: str) -> Callable[[str, Any], str]:
    def convert(name: str, value: Any) -> str:
        if isinstance(value, str) and value.lower() in allowed:
            return value.lower()
        raise ConfigError(f"option {name!r} must be one of {', '.join(allowed)}, got {value!r}")

    return convert


def _text(name: str, value: Any) -> str:
    if isinstance(value, str) and value:
        return value
    raise ConfigError(f"option {name!r} must be a non-empty string, got {value!r}")


def _size(name: str, value: Any) -> tuple[int, int]:
    """`WIDTHxHEIGHT` in a query, or a (width, height) pair from Python."""
    if isinstance(value, str):
        match = re.fullmatch(r"(\d+)x(\d+)", value.strip().lower())
        if match:
            return int(match[1]), int(match[2])
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        return _int(name, value[0]), _int(name, value[1])
    raise ConfigError(f"option {name!r} must be WIDTHxHEIGHT (e.g. 640x480), got {value!r}")


def _callable(name: str, value: Any) -> Any:
    if callable(value):
        return value
    raise ConfigError(f"option {name!r} must be a callable (a decoder factory), got {value!r}")


_LIVE_OPTIONS: dict[str, Callable[[str, Any], Any]] = {
    "reconnect": _bool,
    "wait": _bool,
    "backoff_s": _float,
    "backoff_max_s": _float,
    "max_retries": _optional_int,
    "connect_timeout_s": _float,
    "backwards": _choice("drop", "error"),
    "jitter_us": _int,
    "clock_reset_us": _int,
    "queue_chunks": _int,
}
_POLICY_OPTIONS = (
    "reconnect",
    "wait",
    "backoff_s",
    "backoff_max_s",
    "max_retries",
    "connect_timeout_s",
)

#: Options each scheme accepts, with their converters (strings from a query, or typed values).
SCHEME_OPTIONS: dict[str, dict[str, Callable[[str, Any], Any]]] = {
    "file": {
        "speed": _float,
        "loop": _bool,
        "chunk_events": _int,
        "lenient": _bool,
        "format": _text,
        "sensor_size": _size,
    },
    "dv": {**_LIVE_OPTIONS, "poll_interval_s": _float},
    "raw": {
        **_LIVE_OPTIONS,
        "format": _choice("evt3", "evt2"),
        "width": _int,
        "height": _int,
        "read_size": _int,
        "decoder": _callable,
    },
    "camera": {
        **_LIVE_OPTIONS,
        "driver": _choice("auto", "dv", "nd"),
        "poll_interval_s": _float,
        "iterator_timeout_s": _float,
    },
}


@dataclass(frozen=True)
class SourceSpec:
    """A parsed URI: which kind of source, where, and its typed options."""

    scheme: str  # one of SCHEMES
    uri: str
    path: str | None = None
    host: str | None = None
    port: int | None = None
    serial: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


def parse_uri(uri: str, **options: Any) -> SourceSpec:
    """Check a source URI and its options; raises `ConfigError` naming what is wrong."""
    if not isinstance(uri, (str, os.PathLike)):
        raise ConfigError(f"a source must be a URI or a path, got {uri!r}")
    text = os.fspath(uri)
    if not text:
        raise ConfigError("empty source URI: expected a path or one of " + _expected())
    match = _SCHEME.match(text)
    scheme = match[1].lower() if match else None
    if scheme not in SCHEMES:
        if match and ("://" in text or not os.path.exists(text)):
            raise ConfigError(
                f"unknown source scheme {match[1] + ':'!r} in {text!r}: expected a path or one "
                f"of {_expected()} (for a file whose name has a colon, write file:PATH)"
            )
        return SourceSpec("file", text, path=text, options=_options("file", text, {}, options))
    parts = urlsplit(text)
    query = _query(text, parts.query)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"{text!r}: file URIs name a local path (file:PATH or file:///PATH)")
        path = unquote(parts.path)
        if not path:
            raise ConfigError(f"{text!r}: no path after file:")
        return SourceSpec("file", text, path=path, options=_options("file", text, query, options))
    if scheme in ("dv", "raw+tcp"):
        host, port = _host_port(text, parts, default_port=7777 if scheme == "dv" else None)
        kind = "dv" if scheme == "dv" else "raw"
        return SourceSpec(
            scheme, text, host=host, port=port, options=_options(kind, text, query, options)
        )
    if scheme == "raw+pipe":
        if parts.netloc:
            raise ConfigError(f"{text!r}: write raw+pipe:/path/to/fifo or raw+pipe:///path")
        path = unquote(parts.path)
        if not path:
            raise ConfigError(f"{text!r}: no pipe path after raw+pipe: (raw+pipe:/path/to/fifo)")
        return SourceSpec(scheme, text, path=path, options=_options("raw", text, query, options))
    if scheme == "raw+stdin":
        if parts.netloc or parts.path:
            raise ConfigError(f"{text!r}: raw+stdin: takes no path (options go after ?)")
        return SourceSpec(scheme, text, options=_options("raw", text, query, options))
    # camera
    if parts.netloc:
        raise ConfigError(f"{text!r}: write camera:SERIAL (no //), or camera: for any camera")
    serial = unquote(parts.path) or None
    return SourceSpec(
        "camera", text, serial=serial, options=_options("camera", text, query, options)
    )


def open_uri(uri: str, **options: Any) -> EventSource:
    """The (not yet opened) source a URI names; use it with `async with`."""
    spec = parse_uri(uri, **options)
    if spec.scheme == "file":
        try:
            from spikecut.sources import open_source
        except ImportError:
            raise SourceUnavailableError(
                f"{spec.uri}: this build has no file readers (spikecut.sources.open_source)"
            ) from None
        return open_source(spec.path, **spec.options)
    live, policy = _live_options(spec.options)
    if spec.scheme == "dv":
        from spikecut.sources.live.dv import DvNetworkSource

        return DvNetworkSource(spec.host, spec.port, name=spec.uri, policy=policy, **live)
    if spec.scheme == "camera":
        from spikecut.sources.live.camera import CameraSource

        return CameraSource(spec.serial, name=spec.uri, policy=policy, **live)
    from spikecut.sources.live import raw

    if spec.scheme == "raw+tcp":
        transport: raw.RawTransport = raw.TcpTransport(spec.host, spec.port)
    elif spec.scheme == "raw+pipe":
        transport = raw.PipeTransport(spec.path)
    else:
        transport = raw.StdinTransport()
    return raw.RawStreamSource(transport, name=spec.uri, policy=policy, **live)


def _live_options(options: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    from spikecut.sources.live.base import ReconnectPolicy

    policy = {key: value for key, value in options.items() if key in _POLICY_OPTIONS}
    rest = {key: value for key, value in options.items() if key not in _POLICY_OPTIONS}
    return rest, ReconnectPolicy(**policy)


def _expected() -> str:
    return (
        "file:PATH, dv://HOST:PORT, raw+tcp://HOST:PORT, raw+pipe:PATH, raw+stdin:, camera:[SERIAL]"
    )


def _query(uri: str, query: str) -> dict[str, str]:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ConfigError(f"{uri!r}: malformed query {query!r} (expected key=value&...)") from None
    seen: dict[str, str] = {}
    for key, value in pairs:
        if key in seen:
            raise ConfigError(f"{uri!r}: option {key!r} given twice")
        seen[key] = value
    return seen


def _options(kind: str, uri: str, query: dict[str, str], given: dict[str, Any]) -> dict[str, Any]:
    accepted = SCHEME_OPTIONS[kind]
    typed: dict[str, Any] = {}
    for origin, values in (("query", query), ("keyword", given)):
        for key, value in values.items():
            if value is None and origin == "keyword":
                continue  # not given: the source's default applies
            if key not in accepted:
                raise ConfigError(
                    f"{uri!r}: unknown option {key!r} for this kind of source; it accepts "
                    f"{', '.join(sorted(accepted))}"
                )
            if key == "decoder" and origin == "query":
                raise ConfigError(f"{uri!r}: option 'decoder' can only be passed from Python")
            converted = accepted[key](key, value)
            if key in typed and typed[key] != converted:
                raise ConfigError(
                    f"{uri!r}: option {key!r} is {typed[key]!r} in the URI but {converted!r} "
                    "as a keyword argument"
                )
            typed[key] = converted
    return typed


def _host_port(uri: str, parts: Any, default_port: int | None) -> tuple[str, int]:
    if parts.path not in ("", "/"):
        raise ConfigError(f"{uri!r}: expected {parts.scheme}://HOST:PORT with no path")
    host = parts.hostname
    if not host:
        raise ConfigError(f"{uri!r}: no host (expected {parts.scheme}://HOST:PORT)")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"{uri!r}: the port must be a number in 0..65535") from None
    if port is None:
        if default_port is None:
            raise ConfigError(f"{uri!r}: no port (expected {parts.scheme}://HOST:PORT)")
        port = default_port
    return host, port
