"""iniVation DV network streams (`dv://host:port`) through dv-processing's `NetworkReader`.

The peer is a DV software `net_tcp_server` output or a dv-processing `NetworkWriter`: a TCP
server that sends an AEDAT4 `IOHE` header on connect, then event packets. `NetworkReader` does the
protocol (including LZ4/ZSTD packets); we run it in a worker thread and poll it, because its
`getNextEventBatch()` never blocks (it returns None when no packet is waiting) and it has no
call that waits for data. The poll interval (1 ms by default) is far below the peer's own packet
cadence (DV sends a packet every 10-30 ms).

Two dv-processing traps shape the code:
- The `NetworkReader` constructor waits for the IOHeader holding the GIL: pointed at a server
  that accepts but never sends one, it would freeze the whole process. So each attempt first
  probes the port with a plain asyncio connection and checks that an IOHeader arrives within
  `connect_timeout_s`; only then is the reader constructed.
- Its timestamps are Unix-epoch microseconds (`time_origin="unix"`).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from spikecut.errors import SourceUnavailableError
from spikecut.sources.events import make_events
from spikecut.sources.live.base import LiveSource, PeerUnavailable

DEFAULT_DV_PORT = 7777
CAMERA_EXTRA = "pip install spikecut[camera]"

#: The IOHeader a DV server sends first: uint32 size prefix, uint32 flatbuffer root offset, then
#: the 4-byte flatbuffer identifier.
_IOHEADER_ID = b"IOHE"
_IOHEADER_ID_AT = slice(8, 12)


def require_dv(what: str) -> Any:
    """Import dv-processing, or say which extra to install."""
    try:
        import dv_processing
    except ImportError:
        raise SourceUnavailableError(
            f"{what} needs dv-processing, which is not installed: {CAMERA_EXTRA}"
        ) from None
    return dv_processing


def dv_events(store: Any) -> np.ndarray:
    """A dv-processing `EventStore` as `EVENT_DTYPE` events.

    Negative coordinates (int16 in dv) become 65535 so the source's bounds check drops them.
    """
    packed = store.numpy()  # fields timestamp <i8, x <i2, y <i2, polarity i1
    outside = np.int32(np.iinfo(np.uint16).max)  # typed, not int16: -1 would stay negative
    x, y = (np.where(packed[name] < 0, outside, packed[name]) for name in "xy")
    return make_events(packed["timestamp"], x, y, packed["polarity"] != 0)


def poll_dv_input(
    reader: Any,
    stop: threading.Event,
    emit: Callable[[np.ndarray], bool],
    poll_interval_s: float,
    discard: tuple[Callable[[], Any], ...] = (),
) -> None:
    """Worker-thread loop for any dv-processing input (network reader or camera).

    `discard`: getters of the input's other streams (frames, IMU, triggers), emptied on every
    pass so that what we do not use cannot pile up. Returns when `stop` is set; raises
    `PeerUnavailable` when the input stops running (peer gone, camera unplugged).
    """
    while not stop.is_set():
        try:
            for getter in discard:
                while getter() is not None:
                    pass
            store = reader.getNextEventBatch()
            running = store is not None or reader.isRunning()
        except RuntimeError as exc:
            raise PeerUnavailable(f"dv-processing read failed: {exc}") from None
        if store is None:
            if not running:
                raise PeerUnavailable("the peer stopped streaming")
            time.sleep(poll_interval_s)
            continue
        if store.size() and not emit(dv_events(store)):
            return


async def probe_dv_server(host: str, port: int, timeout_s: float) -> None:
    """Check that host:port is a DV stream server before dv-processing connects to it."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    except (OSError, asyncio.TimeoutError) as exc:
        raise PeerUnavailable(f"cannot connect to {host}:{port}: {exc or 'timed out'}") from None
    try:
        head = await asyncio.wait_for(reader.readexactly(12), timeout_s)
    except asyncio.IncompleteReadError:
        raise PeerUnavailable(f"{host}:{port} closed the connection before its header") from None
    except (OSError, asyncio.TimeoutError):
        raise PeerUnavailable(
            f"{host}:{port} accepted the connection but sent no DV stream header within "
            f"{timeout_s} s"
        ) from None
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    if head[_IOHEADER_ID_AT] != _IOHEADER_ID:
        raise SourceUnavailableError(
            f"{host}:{port} is not a DV stream server: expected an AEDAT4 IOHeader "
            f"('IOHE' at bytes 8-11), got {head!r}. Is it a DV net_tcp_server output or a "
            "dv-processing NetworkWriter?"
        )


class DvNetworkSource(LiveSource):
    """Events from a DV network stream server, reconnecting with backoff when it goes away."""

    def __init__(
        self,
        host: str,
        port: int = DEFAULT_DV_PORT,
        *,
        name: str | None = None,
        poll_interval_s: float = 0.001,
        **options: Any,
    ) -> None:
        super().__init__(name or f"dv://{host}:{port}", **options)
        self.host = host
        self.port = port
        self.poll_interval_s = poll_interval_s
        self._dv = require_dv(f"{self.name}")

    async def _open(self) -> Any:
        await probe_dv_server(self.host, self.port, self.policy.connect_timeout_s)
        try:
            reader = await asyncio.to_thread(self._dv.io.NetworkReader, self.host, self.port)
        except RuntimeError as exc:
            raise PeerUnavailable(f"dv-processing could not connect: {exc}") from None
        if not reader.isEventStreamAvailable():
            raise SourceUnavailableError(f"{self.name}: the stream carries no events")
        resolution = reader.getEventResolution()
        if resolution is None:
            raise SourceUnavailableError(f"{self.name}: the stream does not announce its size")
        self._announce(*resolution, time_origin="unix", format="dv-network")
        return reader

    async def _pump(self, connection: Any) -> None:
        await self._run_worker(
            lambda stop, emit: poll_dv_input(connection, stop, emit, self.poll_interval_s)
        )

    async def _close_connection(self, connection: Any) -> None:
        # Dropping the last reference disconnects; nothing else holds the reader.
        del connection
