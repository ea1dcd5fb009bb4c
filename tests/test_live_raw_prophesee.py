"""raw+tcp end to end with the real EVT 3.0 / EVT 2.0 decoders: the recordings' bytes, served
over TCP in random pieces, give exactly the events the file reader gives."""

from __future__ import annotations

import re

import numpy as np
import pytest
from live_peers import RawPeer, collect, free_port, random_pieces

from spikecut.errors import CorruptFileError
from spikecut.sources import open_reader
from spikecut.sources.events import StreamInfo
from spikecut.sources.uri import open_uri

pytestmark = pytest.mark.timeout(60)

RECORDINGS = [
    "evt3_gen41_pedestrians_5000ev.raw",
    "evt3_gen41_driving.raw",  # vector words, and TIME_LOW steps back (jitter)
    "evt2_gen3_sparklers.raw",
]


def _read(path):
    with open_reader(path) as reader:
        events = np.concatenate(list(reader))
        return events, reader.info, reader.stats, reader.header


@pytest.mark.parametrize("with_header", [True, False], ids=["header", "uri-options"])
@pytest.mark.parametrize("name", RECORDINGS)
async def test_stream_gives_the_file_readers_events(real_data, name, with_header):
    path = real_data / "prophesee_raw" / name
    expected, info, reader_stats, header = _read(path)
    data = path.read_bytes()
    header_bytes = sum(len(line) + 1 for line in header)
    assert data[header_bytes] != ord("%")
    port = free_port()
    uri = f"raw+tcp://127.0.0.1:{port}"
    if with_header:
        payload = data  # the peer announces format and size with the file's own header
    else:
        payload = data[header_bytes:]
        uri += f"?format={info.format}&width={info.width}&height={info.height}"
    pieces = random_pieces(payload, 9000, seed=len(name))
    async with RawPeer(port, [pieces], hold=True), open_uri(uri) as source:
        assert source.info == StreamInfo(info.width, info.height, uri, "sensor", info.format)
        received = await collect(source, expected.size)
    np.testing.assert_array_equal(received, expected)
    assert source.stats.bytes == len(payload)
    assert source.stats.clamped_backwards == reader_stats.clamped_backwards
    assert source.stats.dropped_backwards == source.stats.dropped_out_of_bounds == 0


async def test_bytes_that_do_not_decode_end_the_stream_with_their_offset(real_data):
    data = (real_data / "prophesee_raw" / "evt3_gen41_pedestrians_5000ev.raw").read_bytes()
    body = data[data.index(b"\n% system_ID 48\n") + len(b"\n% system_ID 48\n") :]
    corrupt = body[:4000] + b"\x00\x90" + body[4002:]  # 0x9 is not an EVT 3.0 word type
    port = free_port()
    uri = f"raw+tcp://127.0.0.1:{port}?format=evt3&width=1280&height=720"
    async with RawPeer(port, [[corrupt]], hold=True), open_uri(uri) as source:
        message = rf"{re.escape(uri)}, byte offset 4000: undefined EVT 3.0 word 0x9000"
        with pytest.raises(CorruptFileError, match=message):
            async for _ in source:
                pass
