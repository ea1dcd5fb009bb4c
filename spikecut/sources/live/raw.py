"""Prophesee RAW byte streams (EVT 3.0 / EVT 2.0) over TCP, a named pipe or stdin.

Metavision tools can write a camera's raw output to a pipe or a socket; this source decodes such
a stream incrementally. How a stream announces itself:

- The URI may say `format=evt3|evt2&width=W&height=H`.
- The stream may begin with the RAW file's ASCII header (`%` lines, e.g. `% evt 3.0`,
  `% format EVT3;height=720;width=1280`, `% geometry 1280x720`, `% end`), exactly as a `.raw`
  file does, on every connection. Its values fill in what the URI leaves out; a value both give
  must agree, or the source refuses the stream (`ConfigError`). When the header names no size,
  the sensor generation in `% plugin_name` gives it (e.g. gen3 VGA 640x480).
- Without a header, the URI must give all three.

A decoder is created per connection (EVT3 state such as TIME_HIGH does not carry over a
reconnect); a peer that restarts its camera restarts its clock, which the base class rebases.
Bytes that do not decode end the stream with the decoder's error rather than being skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from spikecut.errors import ConfigError, SourceUnavailableError
from spikecut.sources.live.base import LiveSource, PeerUnavailable

RAW_FORMATS = ("evt3", "evt2")
#: Prophesee sensors emit events a few µs out of order; steps back up to this are clamped (the
#: file readers' rule for RAW files).
RAW_JITTER_US = 1000
DEFAULT_READ_SIZE = 1 << 16
#: A header line longer than this means the stream is not a RAW header at all.
_MAX_HEADER_LINE = 4096
_MAX_HEADER_BYTES = 1 << 20

#: Sensor size by the sensor generation in a RAW header's `plugin_name`, for headers (like the
#: real Gen3/Gen4.1 samples) that carry no geometry line.
_PLUGIN_GEOMETRY = (
    (re.compile(r"gen3"), (640, 480)),
    (re.compile(r"gen41|imx636|evk4|evk3_hd"), (1280, 720)),
    (re.compile(r"genx320|imx8"), (320, 320)),
)


class RawDecoder(Protocol):
    """Incremental decoder: takes any split of the byte stream, returns the events it completed.

    It keeps partial words and decoder state between calls.
    """

    def decode(self, data: bytes) -> np.ndarray: ...


DecoderFactory = Callable[[], RawDecoder]


def default_decoder_factory(format: str) -> DecoderFactory:
    """spikecut's own incremental decoder for `format` (evt3 or evt2)."""
    try:
        from spikecut.sources import prophesee
    except ImportError:
        raise SourceUnavailableError(
            f"the incremental {format.upper()} decoder (spikecut.sources.prophesee) is not "
            "part of this build; pass decoder= to RawStreamSource"
        ) from None
    return {"evt3": prophesee.Evt3Decoder, "evt2": prophesee.Evt2Decoder}[format]


@dataclass
class RawHeader:
    """What a RAW `%` header announces; None where it says nothing."""

    format: str | None = None
    width: int | None = None
    height: int | None = None
    lines: list[str] = field(default_factory=list)


def parse_raw_header(lines: list[str]) -> RawHeader:
    header = RawHeader(lines=lines)
    plugin = None
    for line in lines:
        key, _, value = line.lstrip("%").strip().partition(" ")
        key, value = key.lower(), value.strip()
        if key == "evt":
            header.format = {"3.0": "evt3", "2.0": "evt2"}.get(value, f"evt {value}")
        elif key == "format":
            name, *params = value.split(";")
            header.format = name.strip().lower()
            for param in params:
                k, _, v = param.partition("=")
                if k.strip().lower() in ("width", "height") and v.strip().isdigit():
                    setattr(header, k.strip().lower(), int(v))
        elif key == "geometry":
            match = re.fullmatch(r"(\d+)\s*x\s*(\d+)", value)
            if match:
                header.width, header.height = int(match[1]), int(match[2])
        elif key in ("width", "height") and value.isdigit():
            setattr(header, key, int(value))
        elif key == "plugin_name":
            plugin = value.lower()
    if header.width is None and header.height is None and plugin:
        for pattern, (width, height) in _PLUGIN_GEOMETRY:
            if pattern.search(plugin):
                header.width, header.height = width, height
                break
    return header


class HeaderSplitter:
    """Separates a stream's leading `%` header lines from the binary data, across any splits."""

    def __init__(self) -> None:
        self._buffer = b""
        self._lines: list[str] = []
        self.header: RawHeader | None = None  # set once the header is complete
        self._size = 0

    @property
    def done(self) -> bool:
        return self.header is not None

    def feed(self, data: bytes) -> bytes:
        """Consume `data`; return the part that belongs to the binary body."""
        if self.header is not None:
            return data
        buffer = self._buffer + data
        while buffer:
            line_end = _header_line_end(buffer)
            if line_end is None:  # not (or no longer) a header line: the body starts here
                return self._finish(buffer)
            if line_end < 0:  # a header line still arriving
                if len(buffer) > _MAX_HEADER_LINE:
                    raise ConfigError(
                        f"stream header line longer than {_MAX_HEADER_LINE} bytes: "
                        f"{buffer[:60]!r}...; is this a Prophesee RAW stream?"
                    )
                break
            line = buffer[:line_end].rstrip(b"\r").decode("ascii")
            buffer = buffer[line_end + 1 :]
            self._size += line_end + 1
            self._lines.append(line)
            if line.strip() == "% end":
                return self._finish(buffer)
            if self._size > _MAX_HEADER_BYTES:
                raise ConfigError(f"stream header exceeds {_MAX_HEADER_BYTES} bytes")
        self._buffer = buffer
        return b""

    def _finish(self, body: bytes) -> bytes:
        self.header = parse_raw_header(self._lines)
        self._buffer = b""
        return body


_PRINTABLE = frozenset(range(0x20, 0x7F)) | {0x09, 0x0D}


def _header_line_end(buffer: bytes) -> int | None:
    """Index of the newline ending a `%` text line at the start of `buffer`.

    -1: the line is not complete yet; None: `buffer` does not start with a text line, so binary
    data that happens to begin with 0x25 ('%') is not mistaken for a header.
    """
    if buffer[:1] != b"%":
        return None
    for i, byte in enumerate(buffer):
        if byte == 0x0A:
            return i
        if byte not in _PRINTABLE:
            return None
    return -1


# --- byte transports ------------------------------------------------------------------------


class _Bytes(Protocol):
    async def read(self, n: int) -> bytes: ...

    async def close(self) -> None: ...


class _StreamBytes:
    """TCP sockets, pipes, FIFOs and terminals through asyncio's stream reader."""

    def __init__(self, reader: asyncio.StreamReader, close: Callable[[], Any]) -> None:
        self._reader = reader
        self._close = close

    async def read(self, n: int) -> bytes:
        try:
            return await self._reader.read(n)
        except OSError as exc:
            raise PeerUnavailable(f"connection lost: {exc}") from None

    async def close(self) -> None:
        result = self._close()
        if asyncio.iscoroutine(result):
            with contextlib.suppress(OSError):
                await result


class _FileBytes:
    """Regular files (stdin redirected from a file): the event loop cannot poll them."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    async def read(self, n: int) -> bytes:
        return await asyncio.to_thread(os.read, self._fd, n)

    async def close(self) -> None:
        os.close(self._fd)


async def _pipe_bytes(fd: int, *, shared: bool = False) -> _Bytes:
    """Wrap a readable fd we own: polled through asyncio when possible, read in a thread if not.

    `shared`: the fd is a duplicate of one others use (stdin), whose blocking mode asyncio's
    non-blocking reads would otherwise leave changed.
    """
    if stat.S_ISREG(os.fstat(fd).st_mode):
        return _FileBytes(fd)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=DEFAULT_READ_SIZE)
    pipe = os.fdopen(fd, "rb", buffering=0)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)

    def close() -> None:
        if shared:
            with contextlib.suppress(OSError):
                os.set_blocking(fd, True)
        transport.close()

    return _StreamBytes(reader, close)


class RawTransport(Protocol):
    """Where the bytes come from; `reconnectable` is False where no second connection exists."""

    reconnectable: bool

    async def connect(self, timeout_s: float) -> _Bytes: ...

    def close(self) -> None:
        """Release what outlives single connections (called once, when the source closes)."""


@dataclass
class TcpTransport:
    host: str
    port: int
    reconnectable: bool = True

    async def connect(self, timeout_s: float) -> _Bytes:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, limit=DEFAULT_READ_SIZE), timeout_s
            )
        except (OSError, asyncio.TimeoutError) as exc:
            raise PeerUnavailable(
                f"cannot connect to {self.host}:{self.port}: {exc or 'timed out'}"
            ) from None

        async def close() -> None:
            writer.close()
            await writer.wait_closed()

        return _StreamBytes(reader, close)

    def close(self) -> None:
        pass


class PipeTransport:
    """A named pipe (FIFO): when its writer closes it, the next writer is a reconnect.

    Each writer gets a freshly opened read end (a FIFO keeps reporting end-of-file on the old
    one). A second read end stays open for the source's lifetime so that a writer arriving
    while we reopen neither fails (EPIPE) nor loses what it wrote. A FIFO does not mark where
    one writer ends and the next begins: a writer that starts before the previous one's end was
    read is joined to that stream. A regular file or a character device is read once.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            mode = os.stat(self.path).st_mode
        except OSError as exc:
            raise ConfigError(f"raw+pipe:{self.path}: {exc.strerror}") from None
        self.reconnectable = stat.S_ISFIFO(mode)
        self._keeper: int | None = None

    async def connect(self, timeout_s: float) -> _Bytes:
        # Non-blocking open returns at once even before a writer appears; reads then wait for
        # one (Linux reports no end-of-file on a read end opened after the last writer left).
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
            if self.reconnectable and self._keeper is None:
                self._keeper = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            raise PeerUnavailable(f"cannot open {self.path}: {exc.strerror}") from None
        return await _pipe_bytes(fd)

    def close(self) -> None:
        if self._keeper is not None:
            os.close(self._keeper)
            self._keeper = None


@dataclass
class StdinTransport:
    reconnectable: bool = False

    async def connect(self, timeout_s: float) -> _Bytes:
        return await _pipe_bytes(os.dup(sys.stdin.fileno()), shared=True)

    def close(self) -> None:
        pass


# --- the source -----------------------------------------------------------------------------


@dataclass
class _Connection:
    stream: _Bytes
    splitter: HeaderSplitter = field(default_factory=HeaderSplitter)
    decoder: RawDecoder | None = None
    body: bytes = b""  # read while waiting for the header, not yet decoded


class RawStreamSource(LiveSource):
    """Events decoded incrementally from a Prophesee RAW byte stream."""

    def __init__(
        self,
        transport: RawTransport,
        *,
        name: str,
        format: str | None = None,
        width: int | None = None,
        height: int | None = None,
        decoder: DecoderFactory | None = None,
        read_size: int = DEFAULT_READ_SIZE,
        jitter_us: int = RAW_JITTER_US,
        **options: Any,
    ) -> None:
        super().__init__(name, jitter_us=jitter_us, **options)
        if format is not None and format not in RAW_FORMATS:
            raise ConfigError(
                f"{name}: option 'format' must be one of {RAW_FORMATS}, got {format!r}"
            )
        for option, value, top in (("width", width, 65535), ("height", height, 65535)):
            if value is not None and not (isinstance(value, int) and 0 < value <= top):
                raise ConfigError(
                    f"{name}: option {option!r} must be an integer in 1..{top}, got {value!r}"
                )
        if not (isinstance(read_size, int) and read_size > 0):
            raise ConfigError(f"{name}: option 'read_size' must be > 0, got {read_size!r}")
        if not transport.reconnectable and self.policy.reconnect:
            self.policy = dataclasses.replace(self.policy, reconnect=False)
        self.transport = transport
        self.format = format
        self.width = width
        self.height = height
        self.read_size = read_size
        self._decoder_factory = decoder

    def _complete(self) -> bool:
        return None not in (self.width, self.height) and (
            self.format is not None or self._decoder_factory is not None
        )

    async def _open(self) -> _Connection:
        connection = _Connection(await self.transport.connect(self.policy.connect_timeout_s))
        try:
            if self._info is None and not self._complete():
                await self._read_header(connection)
            if self._info is None:
                self._adopt(connection.splitter.header)
        except BaseException:
            await connection.stream.close()
            raise
        return connection

    async def _read_header(self, connection: _Connection) -> None:
        """Read until the header is complete (the URI alone does not describe the stream)."""
        timeout_s = self.policy.connect_timeout_s
        try:
            await asyncio.wait_for(self._fill_header(connection), timeout_s)
        except asyncio.TimeoutError:
            raise PeerUnavailable(
                f"no data within {timeout_s} s, so the stream's format and sensor size are "
                "unknown (give format=, width= and height= in the URI to start without data)"
            ) from None

    async def _fill_header(self, connection: _Connection) -> None:
        while not connection.splitter.done:
            data = await connection.stream.read(self.read_size)
            if not data:
                raise PeerUnavailable("the peer closed the stream before sending data")
            self.stats.bytes += len(data)
            connection.body += connection.splitter.feed(data)

    def _adopt(self, header: RawHeader | None) -> None:
        """Settle format and geometry from the options and, if one arrived, the header."""
        values = {"format": self.format, "width": self.width, "height": self.height}
        if header is not None:
            for key, announced in (
                ("format", header.format),
                ("width", header.width),
                ("height", header.height),
            ):
                if announced is None:
                    continue
                if values[key] is not None and values[key] != announced:
                    raise ConfigError(
                        f"{self.name}: option {key}={values[key]} contradicts the stream's "
                        f"header, which announces {key} {announced}"
                    )
                values[key] = announced
        missing = [key for key in ("width", "height") if values[key] is None]
        if values["format"] is None and self._decoder_factory is None:
            missing.insert(0, "format")
        if missing:
            said = "its header does not say" if header and header.lines else "it sent no % header"
            raise ConfigError(
                f"{self.name}: the stream's {', '.join(missing)} unknown ({said}); "
                f"add {'&'.join(f'{key}=...' for key in missing)} to the URI"
            )
        if values["format"] is not None and values["format"] not in RAW_FORMATS:
            raise ConfigError(
                f"{self.name}: the stream's format {values['format']!r} is not supported "
                f"(supported: {', '.join(RAW_FORMATS)})"
            )
        self.format, self.width, self.height = values["format"], values["width"], values["height"]
        self._announce(self.width, self.height, time_origin="sensor", format=self.format)

    def _new_decoder(self) -> RawDecoder:
        if self._decoder_factory is not None:
            return self._decoder_factory()
        assert self.format is not None
        return default_decoder_factory(self.format)()

    async def _pump(self, connection: _Connection) -> None:
        pending = connection.body
        connection.body = b""
        while True:
            if pending:
                body = connection.splitter.feed(pending)
                if connection.splitter.done and connection.decoder is None:
                    self._adopt(connection.splitter.header)  # checks a reconnect's header too
                    connection.decoder = self._new_decoder()
                if body:
                    assert connection.decoder is not None
                    events = connection.decoder.decode(body)
                    if events.size:
                        await self._emit(events)
            pending = await connection.stream.read(self.read_size)
            if not pending:
                return
            self.stats.bytes += len(pending)

    async def _close_connection(self, connection: _Connection) -> None:
        await connection.stream.close()

    async def aclose(self) -> None:
        await super().aclose()
        self.transport.close()
