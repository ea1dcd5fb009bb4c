"""Real peers for the live-source tests: a dv-processing NetworkWriter in its own process, an
asyncio TCP server serving raw bytes, and helpers that wait with timeouts instead of sleeping.

Run as a script, this module is the DV peer process:
    python live_peers.py dv PORT WIDTH HEIGHT
then reads commands from stdin: `send PATH.npy BATCH` (write those events, BATCH per packet, and
answer `sent`) or `exit`. It always leaves through os._exit: destroying a NetworkWriter that
still has a client deadlocks on the GIL in dv-processing 2.0.4.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

EVENT_DTYPE = np.dtype([("t", "<i8"), ("x", "<u2"), ("y", "<u2"), ("p", "u1")])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.01)


async def collect(source, count: int, timeout_s: float = 10.0) -> np.ndarray:
    """The next `count` events from an open source (fails if they do not come in time)."""
    chunks, total = [], 0
    while total < count:
        chunk = await asyncio.wait_for(source.__anext__(), timeout_s)
        chunks.append(chunk)
        total += chunk.size
    events = np.concatenate(chunks)
    assert events.size == count, f"expected {count} events, got {events.size}"
    return events


def random_events(n: int, width: int, height: int, t0: int = 1_000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    events = np.zeros(n, dtype=EVENT_DTYPE)
    events["t"] = t0 + np.cumsum(rng.integers(0, 50, n))
    events["x"] = rng.integers(0, width, n)
    events["y"] = rng.integers(0, height, n)
    events["p"] = rng.integers(0, 2, n)
    return events


class RecordDecoder:
    """Test decoder: the stream is raw 13-byte EVENT_DTYPE records, split anywhere."""

    def __init__(self) -> None:
        self.buffer = b""

    def decode(self, data: bytes) -> np.ndarray:
        self.buffer += data
        whole = len(self.buffer) // EVENT_DTYPE.itemsize * EVENT_DTYPE.itemsize
        events = np.frombuffer(self.buffer[:whole], dtype=EVENT_DTYPE).copy()
        self.buffer = self.buffer[whole:]
        return events


def random_pieces(data: bytes, max_piece: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    pieces, i = [], 0
    while i < len(data):
        n = int(rng.integers(1, max_piece + 1))
        pieces.append(data[i : i + n])
        i += n
    return pieces


class RawPeer:
    """A TCP server that hands each client the next scripted payload, in pieces.

    After the payload it closes the connection (`hold=False`) or keeps it open until the peer
    is stopped. `stop()` closes the server and every client: the peer "goes away".
    """

    def __init__(self, port: int, payloads: list[list[bytes]], hold: bool = False) -> None:
        self.port = port
        self.payloads = list(payloads)
        self.hold = hold
        self.clients = 0
        self._server: asyncio.base_events.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> RawPeer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.clients += 1
        self._writers.append(writer)
        pieces = self.payloads.pop(0) if self.payloads else []
        try:
            for piece in pieces:
                writer.write(piece)
                await writer.drain()
            if self.hold:
                await reader.read()  # until the client leaves or we are stopped
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in self._writers:
                writer.close()
            await self._server.wait_closed()
            self._server = None


class DvPeer:
    """A dv-processing NetworkWriter serving `dv://127.0.0.1:PORT`, in a child process."""

    def __init__(self, port: int, width: int, height: int, tmp_path: Path) -> None:
        self.port, self.width, self.height = port, width, height
        self.tmp_path = tmp_path
        self.process: asyncio.subprocess.Process | None = None
        self._sends = 0

    async def __aenter__(self) -> DvPeer:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "dv",
            str(self.port),
            str(self.width),
            str(self.height),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        line = await asyncio.wait_for(self.process.stdout.readline(), 20)
        assert line.strip() == b"ready", line
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.kill()

    async def send(self, events: np.ndarray, batch: int) -> None:
        self._sends += 1
        path = self.tmp_path / f"dv-peer-{self.port}-{self._sends}.npy"
        np.save(path, events)
        self.process.stdin.write(f"send {path} {batch}\n".encode())
        await self.process.stdin.drain()
        line = await asyncio.wait_for(self.process.stdout.readline(), 20)
        assert line.strip() == b"sent", line

    async def kill(self) -> None:
        """The camera goes away: the process exits and its sockets close."""
        if self.process is not None and self.process.returncode is None:
            self.process.stdin.write(b"exit\n")
            await self.process.stdin.drain()
            await asyncio.wait_for(self.process.wait(), 20)


def _dv_peer(port: int, width: int, height: int) -> None:
    import dv_processing as dv

    stream = dv.io.Stream.EventStream(0, "events", "SPIKECUT_TEST", (width, height))
    writer = dv.io.NetworkWriter("127.0.0.1", port, stream)
    print("ready", flush=True)
    for line in sys.stdin:
        command, *args = line.split()
        if command == "exit":
            break
        events = np.load(args[0])
        batch = int(args[1])
        for start in range(0, events.size, batch):
            store = dv.EventStore()
            for t, x, y, p in events[start : start + batch].tolist():
                store.push_back(t, x, y, bool(p))
            writer.writeEvents(store)
        while writer.getQueuedPacketCount():
            time.sleep(0.001)
        print("sent", flush=True)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    if sys.argv[1] == "dv":
        _dv_peer(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
