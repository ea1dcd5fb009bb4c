"""Throughput of spikecut's live sources, against a baseline measured in the same run.

dv: a dv-processing NetworkWriter (a child process, as a camera would be) sends the same
prebuilt packets twice, as fast as it can. First a bare dv-processing client (NetworkReader
polled in a loop, `store.numpy()` per packet: the floor dv-processing itself sets), then
spikecut's `dv://` source (worker thread, asyncio queue, conversion, bounds and time checks).
The ratio says what our plumbing costs on top of dv-processing.

raw: a recording, repeated back to back (timestamps shifted, re-encoded with our EVT encoder),
is sent by a TCP server to spikecut's `raw+tcp://` source; the baseline decodes the same bytes
in memory with the same incremental decoder.

    python tools/bench_live.py dv --events 2000000 --batch 10000 [--json]
    python tools/bench_live.py raw --file ../shared/data/real/prophesee_raw/evt3_gen41_driving.raw
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spikecut.sources.uri import open_uri

WIDTH, HEIGHT = 640, 480


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- dv --------------------------------------------------------------------------------------


def dv_peer(port: int, n_events: int, batch: int) -> None:
    """Child process: prebuild packets, then send them all on each `go` line."""
    import dv_processing as dv

    rng = np.random.default_rng(0)
    t = 1_700_000_000_000_000 + np.cumsum(rng.integers(0, 3, n_events))
    x = rng.integers(0, WIDTH, n_events)
    y = rng.integers(0, HEIGHT, n_events)
    p = rng.integers(0, 2, n_events).astype(bool)
    stores = []
    for start in range(0, n_events, batch):
        store = dv.EventStore()
        stop = start + batch
        for row in zip(
            t[start:stop].tolist(),
            x[start:stop].tolist(),
            y[start:stop].tolist(),
            p[start:stop].tolist(),
            strict=True,
        ):
            store.push_back(*row)
        stores.append(store)
    stream = dv.io.Stream.EventStream(0, "events", "BENCH", (WIDTH, HEIGHT))
    writer = dv.io.NetworkWriter("127.0.0.1", port, stream)
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "go":
            break
        for store in stores:
            writer.writeEvents(store)
        while writer.getQueuedPacketCount():
            time.sleep(0.001)
        print("done", flush=True)
    os._exit(0)  # a NetworkWriter with clients deadlocks in its destructor


def _command(peer: subprocess.Popen, line: str, expect: str) -> None:
    peer.stdin.write(line + "\n")
    peer.stdin.flush()
    answer = peer.stdout.readline().strip()
    if answer != expect:
        raise RuntimeError(f"peer answered {answer!r}, expected {expect!r}")


def bench_dv_baseline(port: int, n_events: int, peer: subprocess.Popen) -> float:
    import threading

    import dv_processing as dv

    reader = dv.io.NetworkReader("127.0.0.1", port)
    received, first = 0, None
    go = threading.Thread(target=_command, args=(peer, "go", "done"))
    go.start()
    while received < n_events:
        store = reader.getNextEventBatch()
        if store is None:
            time.sleep(0.0005)
            continue
        if first is None:
            first = time.perf_counter()
        received += store.numpy().shape[0]
    elapsed = time.perf_counter() - first
    go.join()
    del reader
    return n_events / elapsed


async def bench_dv_source(port: int, n_events: int, peer: subprocess.Popen) -> float:
    async with open_uri(f"dv://127.0.0.1:{port}") as source:
        go = asyncio.create_task(asyncio.to_thread(_command, peer, "go", "done"))
        received, first = 0, None
        async for events in source:
            if first is None:
                first = time.perf_counter()
            received += events.size
            if received >= n_events:
                break
        elapsed = time.perf_counter() - first
        await go
    return n_events / elapsed


def run_dv(args: argparse.Namespace) -> dict:
    port = free_port()
    peer = subprocess.Popen(
        [sys.executable, __file__, "dv-peer", str(port), str(args.events), str(args.batch)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        if peer.stdout.readline().strip() != "ready":
            raise RuntimeError("the dv peer did not start")
        baseline = bench_dv_baseline(port, args.events, peer)
        ours = asyncio.run(bench_dv_source(port, args.events, peer))
    finally:
        peer.kill()
        peer.wait()
    return {
        "mode": "dv",
        "events": args.events,
        "batch": args.batch,
        "baseline_mev_s": baseline / 1e6,
        "spikecut_mev_s": ours / 1e6,
        "ratio": ours / baseline,
    }


# --- raw -------------------------------------------------------------------------------------


def run_raw(args: argparse.Namespace) -> dict:
    from spikecut.sources import prophesee, read_events

    recording, info = read_events(args.file)
    fmt = info.format
    decoder_type = {"evt3": prophesee.Evt3Decoder, "evt2": prophesee.Evt2Decoder}[fmt]
    encoder = {"evt3": prophesee.Evt3Encoder, "evt2": prophesee.Evt2Encoder}[fmt]()
    # A long stream whose clock keeps running: the recording back to back, re-encoded.
    span = int(recording["t"][-1] - recording["t"][0]) + 1
    copies = []
    for i in range(args.repeat):
        copy = recording.copy()
        copy["t"] += i * span
        copies.append(copy)
    body = encoder.encode(np.concatenate(copies))
    header = f"% evt {fmt[-1]}.0\n% geometry {info.width}x{info.height}\n% end\n".encode()
    n_expected = recording.size * args.repeat

    decoder_type().decode(body[: 1 << 16])  # load the compiled kernels outside the timing
    # Baseline: the same incremental decoder on the same bytes, in memory, same read size.
    start = time.perf_counter()
    decoder, n_events = decoder_type(), 0
    for offset in range(0, len(body), 1 << 16):
        n_events += decoder.decode(body[offset : offset + (1 << 16)]).size
    baseline = n_events / (time.perf_counter() - start)

    async def serve_and_read() -> tuple[float, int]:
        async def serve(reader, writer):
            writer.write(header)
            for offset in range(0, len(body), 1 << 20):
                writer.write(body[offset : offset + (1 << 20)])
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with open_uri(f"raw+tcp://127.0.0.1:{port}?reconnect=false") as source:
            received, first = 0, time.perf_counter()
            async for events in source:
                received += events.size
        server.close()
        return received / (time.perf_counter() - first), received

    ours, received = asyncio.run(serve_and_read())
    if received != n_expected or n_events != n_expected:
        raise RuntimeError(f"expected {n_expected} events, got {received} / {n_events}")
    return {
        "mode": "raw",
        "file": str(args.file),
        "format": fmt,
        "events": n_expected,
        "baseline_mev_s": baseline / 1e6,
        "spikecut_mev_s": ours / 1e6,
        "ratio": ours / baseline,
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "dv-peer":
        dv_peer(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    dv = sub.add_parser("dv", help="dv:// against a NetworkWriter peer")
    dv.add_argument("--events", type=int, default=2_000_000)
    dv.add_argument("--batch", type=int, default=10_000, help="events per packet")
    raw = sub.add_parser("raw", help="raw+tcp:// with the real EVT decoders")
    raw.add_argument("--file", required=True, help="a Prophesee .raw recording")
    raw.add_argument("--repeat", type=int, default=20)
    for p in (dv, raw):
        p.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    result = run_dv(args) if args.mode == "dv" else run_raw(args)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>16}: {value:.3f}" if isinstance(value, float) else f"{key:>16}: {value}")


if __name__ == "__main__":
    main()
