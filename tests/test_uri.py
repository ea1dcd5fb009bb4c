"""Source URIs: what each scheme accepts, and clear errors for what it does not."""

from __future__ import annotations

import pytest

from spikecut.errors import ConfigError
from spikecut.sources.live.base import ReconnectPolicy
from spikecut.sources.live.camera import CameraSource
from spikecut.sources.live.dv import DvNetworkSource
from spikecut.sources.live.raw import PipeTransport, RawStreamSource, StdinTransport, TcpTransport
from spikecut.sources.uri import parse_uri


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("recordings/a.aedat4", {"scheme": "file", "path": "recordings/a.aedat4"}),
        ("/data/x:y.raw", {"scheme": "file", "path": "/data/x:y.raw"}),
        ("file:rec%20one.raw?speed=2", {"scheme": "file", "path": "rec one.raw"}),
        ("file:///abs/rec.dat", {"scheme": "file", "path": "/abs/rec.dat"}),
        ("dv://cam.local", {"scheme": "dv", "host": "cam.local", "port": 7777}),
        ("DV://10.0.0.2:4040", {"scheme": "dv", "host": "10.0.0.2", "port": 4040}),
        ("dv://[::1]:4040/", {"scheme": "dv", "host": "::1", "port": 4040}),
        ("raw+tcp://h:9000?format=evt2", {"scheme": "raw+tcp", "host": "h", "port": 9000}),
        ("raw+pipe:/tmp/cam.fifo", {"scheme": "raw+pipe", "path": "/tmp/cam.fifo"}),
        ("raw+pipe:///tmp/cam.fifo", {"scheme": "raw+pipe", "path": "/tmp/cam.fifo"}),
        ("raw+stdin:?format=evt3", {"scheme": "raw+stdin"}),
        ("camera:", {"scheme": "camera", "serial": None}),
        ("camera:00050423?driver=nd", {"scheme": "camera", "serial": "00050423"}),
    ],
)
def test_schemes_parse(uri, expected):
    spec = parse_uri(uri)
    for key, value in expected.items():
        assert getattr(spec, key) == value
    assert spec.uri == uri


def test_options_are_typed_from_the_query_and_from_keywords():
    spec = parse_uri("raw+tcp://h:1?format=EVT3&width=1280&height=720&wait=yes&max_retries=none")
    assert spec.options == {
        "format": "evt3",
        "width": 1280,
        "height": 720,
        "wait": True,
        "max_retries": None,
    }
    spec = parse_uri("dv://h:1?backoff_s=0.5", backoff_s=0.5, reconnect=False, backwards=None)
    assert spec.options == {"backoff_s": 0.5, "reconnect": False}
    assert parse_uri("file:a.raw?loop=1", speed=2).options == {"loop": True, "speed": 2.0}
    spec = parse_uri("file:a.es?sensor_size=304x240&format=es&lenient=on", chunk_events=4096)
    assert spec.options == {
        "sensor_size": (304, 240),
        "format": "es",
        "lenient": True,
        "chunk_events": 4096,
    }
    assert parse_uri("a.es", sensor_size=(304, 240)).options == {"sensor_size": (304, 240)}


@pytest.mark.parametrize(
    ("uri", "options", "message"),
    [
        ("", {}, "empty source URI"),
        ("http://host/x", {}, r"unknown source scheme 'http:'.*dv://HOST:PORT"),
        ("nosuchscheme:thing", {}, "write file:PATH"),
        ("dv://", {}, "no host"),
        ("dv://h:notaport", {}, "port must be a number"),
        ("dv://h:1/path", {}, "no path"),
        ("raw+tcp://h", {}, "no port"),
        ("raw+pipe:", {}, "no pipe path"),
        ("raw+pipe://host/x", {}, r"raw\+pipe:/path/to/fifo"),
        ("raw+stdin:/x", {}, "takes no path"),
        ("camera://123", {}, "write camera:SERIAL"),
        ("file://otherhost/x", {}, "local path"),
        ("dv://h:1?speed=2", {}, r"unknown option 'speed'.*backoff_s"),
        ("file:a.raw", {"wait": True}, "unknown option 'wait'"),
        ("dv://h:1?wait=maybe", {}, "option 'wait' must be true or false, got 'maybe'"),
        ("dv://h:1?backoff_s=fast", {}, "option 'backoff_s' must be a number, got 'fast'"),
        ("raw+tcp://h:1?width=12.5", {}, "option 'width' must be an integer, got '12.5'"),
        ("raw+tcp://h:1?format=evt4", {}, "option 'format' must be one of evt3, evt2"),
        ("camera:?driver=usb", {}, "option 'driver' must be one of auto, dv, nd"),
        ("dv://h:1?wait=1&wait=0", {}, "option 'wait' given twice"),
        ("dv://h:1?wait", {}, "malformed query 'wait'"),
        ("dv://h:1?wait=", {}, "must be true or false, got ''"),
        ("dv://h:1?backoff_s=1", {"backoff_s": 2}, "is 1.0 in the URI but 2.0"),
        ("raw+tcp://h:1?decoder=x", {}, "only be passed from Python"),
        ("raw+tcp://h:1", {"decoder": 3}, "must be a callable"),
        ("file:a.es?sensor_size=304", {}, "must be WIDTHxHEIGHT"),
    ],
)
def test_bad_uris_name_the_value_and_what_is_expected(uri, options, message):
    with pytest.raises(ConfigError, match=message):
        parse_uri(uri, **options)


def test_open_uri_builds_live_sources_with_their_options(tmp_path):
    from spikecut.sources.uri import open_uri

    source = open_uri("dv://h:9?wait=true&backoff_max_s=9&poll_interval_s=0.002&queue_chunks=8")
    assert isinstance(source, DvNetworkSource) and source.live
    assert (source.host, source.port, source.poll_interval_s) == ("h", 9, 0.002)
    assert source.policy == ReconnectPolicy(wait=True, backoff_max_s=9.0)
    assert source.name == "dv://h:9?wait=true&backoff_max_s=9&poll_interval_s=0.002&queue_chunks=8"

    raw = open_uri("raw+tcp://h:9?format=evt2&width=640&height=480&backwards=error")
    assert isinstance(raw, RawStreamSource) and isinstance(raw.transport, TcpTransport)
    assert (raw.format, raw.width, raw.height, raw.backwards) == ("evt2", 640, 480, "error")
    # A stdin or regular-file stream cannot come back, so it never reconnects.
    stdin = open_uri("raw+stdin:?format=evt3&width=1&height=1")
    assert isinstance(stdin.transport, StdinTransport) and not stdin.policy.reconnect
    fifo = tmp_path / "x.raw"
    fifo.write_bytes(b"")
    pipe = open_uri(f"raw+pipe:{fifo}")
    assert isinstance(pipe.transport, PipeTransport) and not pipe.policy.reconnect

    camera = open_uri("camera:ABC?driver=dv&iterator_timeout_s=0.2")
    assert isinstance(camera, CameraSource)
    assert (camera.serial, camera.driver, camera.iterator_timeout_s) == ("ABC", "dv", 0.2)


def test_bad_option_values_are_refused_when_the_source_is_built(tmp_path):
    from spikecut.sources.uri import open_uri

    with pytest.raises(ConfigError, match=r"'backoff_max_s' \(0.1\) must be >= 'backoff_s' \(1.0"):
        open_uri("dv://h:1?backoff_s=1&backoff_max_s=0.1")
    with pytest.raises(ConfigError, match="'queue_chunks' must be >= 1"):
        open_uri("dv://h:1?queue_chunks=0")
    with pytest.raises(ConfigError, match="'width' must be an integer in 1..65535, got 70000"):
        open_uri("raw+tcp://h:1?width=70000")
    with pytest.raises(ConfigError, match="raw\\+pipe:.*No such file"):
        open_uri(f"raw+pipe:{tmp_path / 'missing'}")


async def test_file_uris_replay_through_the_readers(real_data):
    import numpy as np

    from spikecut.sources import FileSource, read_events
    from spikecut.sources.uri import open_uri

    path = real_data / "prophesee_raw" / "evt3_gen41_pedestrians_5000ev.raw"
    expected, info = read_events(path)
    for uri in (str(path), f"file:{path}", f"file://{path}?chunk_events=1000&speed=1000"):
        source = open_uri(uri)
        assert isinstance(source, FileSource) and not source.live
        async with source:
            assert (source.info.width, source.info.height) == (info.width, info.height)
            events = np.concatenate([chunk async for chunk in source])
        np.testing.assert_array_equal(events, expected)
    assert source.speed == 1000.0
