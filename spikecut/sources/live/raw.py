"""Prophesee RAW byte streams (EVT 3.0 / EVT 2.0) over TCP, a named pipe or stdin.

Metavision tools can write a camera's raw output to a pipe or a socket; this source decodes such
a stream incrementally. How a stream announces itself:

- The URI may say `format=evt3|evt2&width=W&height=H`.
- The stream may begin with the RAW file's ASCII header (`%` lines, e.g. `% evt 3.0`,
  `% format EVT3;height=720;width=1280`, `% geometry 1280x720`, `% end`), exactly as a `.raw`
  file does, on every connection; it is read with the file readers' rules
  (`spikecut.sources.prophesee`), so the camera plugin named in it gives the size when no
  geometry line does. Its values fill in what the URI leaves out; a value both give must agree,
  or the source refuses the stream (`ConfigError`).
- Without a header, the URI must give all three.

Each connection must start at a word boundary (as a tool writing its output from the start
does), and gets a fresh decoder (`Evt3Decoder` / `Evt2Decoder`, the readers' incremental
decoders; EVT3 state such as TIME_HIGH does not carry over a reconnect). Timestamps follow the
file readers exactly, including their jitter rule (`PROPHESEE_JITTER_US`), so a stream and the
same bytes read as a file give the same events. A peer that restarts its camera restarts its
clock, which the base class rebases. Bytes that do not decode end the stream with the decoder's
`CorruptFileError` (naming the byte offset in the connection) rather than being skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from spikecut.errors import ConfigError, CorruptFileError
from spikecut.sources.live.base import LiveSource, PeerUnavailable

if TYPE_CHECKING:
    from spikecut.sources.prophesee import RawHeader

RAW_FORMATS = ("evt3", "evt2")
DEFAULT_READ_SIZE = 1 << 16
#: A header line longer than this means the stream is not a RAW header at all.
_MAX_HEADER_LINE = 4096


class RawDecoder(Protocol):
    """Incremental decoder: takes any split of the byte stream, returns the events it completed.

    It keeps partial words and decoder state between calls.
    """

    def decode(self, data: bytes) -> np.ndarray: ...


DecoderFactory = Callable[[], RawDecoder]


def _prophesee() -> Any:
    # Imported on use: it loads Numba, which only raw streams need.
    from spikecut.sources import prophesee

    return prophesee


def prophesee_jitter_us() -> int:
    """How far back a Prophesee timestamp may step as sensor jitter (the file readers' value)."""
    return int(_prophesee().PROPHESEE_JITTER_US)


def read_header(buffered: bytes) -> RawHeader | None:
    """The `%` header at the start of a stream's first bytes, or None while it may go on.

    `prophesee.parse_raw_header` (the file readers' rules, binary that starts with 0x25
    included), with less patience for an unfinished line: a stream is not read for megabytes
    waiting for a header line to end.
    """
    try:
        return _prophesee().parse_raw_header(buffered, max_line=_MAX_HEADER_LINE)
    except CorruptFileError as exc:
        start = exc.offset or 0
        raise ConfigError(
            f"stream header line longer than {_MAX_HEADER_LINE} bytes: "
            f"{buffered[start : start + 60]!r}...; is this a Prophesee RAW stream?"
        ) from None


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


def _take_header(connection: _Connection, data: bytes) -> bytes:
    """Buffer `data` until the connection's header is complete; then return what follows it."""
    buffered = connection.buffered + data
    connection.header = read_header(buffered)
    if connection.header is None:
        connection.buffered = buffered
        return b""
    connection.buffered = b""
    return buffered[connection.header.length :]


@dataclass
class _Connection:
    stream: _Bytes
    header: RawHeader | None = None  # once complete (empty when the stream has none)
    buffered: bytes = b""  # read while the header was incomplete, not yet decoded
    decoder: RawDecoder | None = None


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
        jitter_us: int | None = None,
        **options: Any,
    ) -> None:
        if jitter_us is None:
            jitter_us = prophesee_jitter_us()
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
                self._adopt(connection.header)
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
        while connection.header is None:
            data = await connection.stream.read(self.read_size)
            if not data:
                raise PeerUnavailable("the peer closed the stream before sending data")
            self.stats.bytes += len(data)
            connection.buffered = _take_header(connection, data)

    def _adopt(self, header: RawHeader | None) -> None:
        """Settle format and geometry from the options and, if one arrived, the header."""
        values = {"format": self.format, "width": self.width, "height": self.height}
        if header is not None:
            width, height = header.sensor_size or (None, None)
            for key, announced in (
                ("format", header.version),
                ("width", width),
                ("height", height),
            ):
                if announced is None:
                    continue
                if values[key] is not None and values[key] != announced:
                    raise ConfigError(
                        f"{self.name}: the stream's header announces {key} {announced}, but "
                        f"{key} is {values[key]} (from the URI or an earlier connection)"
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

    def _new_decoder(self, header: RawHeader) -> RawDecoder:
        if self._decoder_factory is not None:
            return self._decoder_factory()
        prophesee = _prophesee()
        decoder_type = {"evt3": prophesee.Evt3Decoder, "evt2": prophesee.Evt2Decoder}
        # Error offsets count from the start of the connection, header included.
        return decoder_type[self.format](source=self.name, offset=header.length)

    async def _pump(self, connection: _Connection) -> None:
        data, connection.buffered = connection.buffered, b""
        while True:
            if connection.header is None:
                data = _take_header(connection, data)
            if connection.header is not None and connection.decoder is None:
                self._adopt(connection.header)  # checks a reconnect's header too
                connection.decoder = self._new_decoder(connection.header)
            if data:
                assert connection.decoder is not None
                events = connection.decoder.decode(data)
                if events.size:
                    await self._emit(events)
            data = await connection.stream.read(self.read_size)
            if not data:
                left = getattr(connection.decoder, "pending_bytes", 0)
                if left:
                    self.stats.last_error = f"the connection ended inside a word ({left} bytes)"
                return
            self.stats.bytes += len(data)

    async def _close_connection(self, connection: _Connection) -> None:
        await connection.stream.close()

    async def aclose(self) -> None:
        await super().aclose()
        self.transport.close()
