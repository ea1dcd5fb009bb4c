"""camera: discovery through the real dv-processing and neuromorphic-drivers (no camera here),
and the messages a user sees when no camera or no camera library is there.

Opening and streaming a real camera cannot be exercised without hardware.
"""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest

from spikecut.errors import SourceUnavailableError
from spikecut.sources.events import EVENT_DTYPE
from spikecut.sources.live.base import LiveStats
from spikecut.sources.live.camera import discover_cameras, poll_nd_device
from spikecut.sources.uri import open_uri

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def no_camera():
    pytest.importorskip("dv_processing")
    pytest.importorskip("neuromorphic_drivers")
    if discover_cameras().cameras:
        pytest.skip("an event camera is connected to this machine")


def test_discovery_asks_both_libraries(no_camera):
    discovery = discover_cameras()
    assert discovery.cameras == [] and discovery.installed == ["dv", "nd"]
    dv_line, nd_line = discovery.searched
    assert dv_line.startswith("dv-processing 2.") and dv_line.endswith(": no camera")
    # Without USB access (as in a container), libusb itself fails; either way it is reported.
    assert nd_line.startswith("neuromorphic-drivers 0.")
    assert nd_line.endswith(": no camera") or "USB enumeration failed" in nd_line


async def test_no_camera_found_lists_what_was_searched(no_camera):
    with pytest.raises(SourceUnavailableError) as caught:
        async with open_uri("camera:"):
            pass
    message = str(caught.value)
    assert message.startswith("camera:: no event camera found (searched dv-processing 2.")
    assert "; neuromorphic-drivers 0." in message and "wait=true" in message


async def test_a_serial_and_a_driver_narrow_the_search(no_camera):
    with pytest.raises(
        SourceUnavailableError, match="no camera with serial DX0042 found"
    ) as caught:
        async with open_uri("camera:DX0042?driver=dv"):
            pass
    assert "neuromorphic-drivers" not in str(caught.value)


async def test_waiting_for_a_camera_gives_up_after_max_retries(no_camera):
    source = open_uri("camera:?driver=nd&wait=true&max_retries=1&backoff_s=0.01")
    with pytest.raises(SourceUnavailableError, match="gave up after 2 failed connection attempts"):
        await source.__aenter__()
    assert source.stats.failed_attempts == 2


@pytest.fixture
def no_camera_libraries(monkeypatch):
    monkeypatch.setitem(sys.modules, "dv_processing", None)
    monkeypatch.setitem(sys.modules, "neuromorphic_drivers", None)


@pytest.mark.parametrize("uri", ["camera:", "camera:?driver=dv", "camera:X?driver=nd"])
async def test_missing_extra_says_how_to_install_it(no_camera_libraries, uri):
    with pytest.raises(SourceUnavailableError, match=r"pip install spikecut\[camera\]") as caught:
        async with open_uri(uri):
            pass
    assert "no camera library is installed" in str(caught.value)
    assert "not installed" in str(caught.value)


def test_dv_network_without_the_extra(no_camera_libraries):
    with pytest.raises(SourceUnavailableError, match=r"needs dv-processing.*spikecut\[camera\]"):
        open_uri("dv://127.0.0.1:7777")


class ScriptedDevice:
    """Stands in for a neuromorphic-drivers device: (status, packet) pairs, None on timeout.

    This checks our loop (conversion, timeouts, overflow counting, stop); it cannot check the
    driver's API, which has not been run against hardware.
    """

    class Packet:
        def __init__(self, events, overflows=()):
            self.polarity_events = events
            self.polarity_events_overflow_indices = np.array(overflows, dtype=np.uint64)

    def __init__(self, packets, stop):
        self.packets, self.stop = list(packets), stop

    def __next__(self):
        if not self.packets:
            self.stop.set()
            return None, None
        return None, self.packets.pop(0)


def test_nd_packets_become_events_and_overflows_are_counted():
    nd_dtype = np.dtype([("t", "<u8"), ("x", "<u2"), ("y", "<u2"), ("on", "?")])
    first = np.array([(5, 1, 2, True), (7, 3, 4, False)], dtype=nd_dtype)
    second = np.array([(9, 5, 6, True)], dtype=nd_dtype)
    stop, emitted, stats = threading.Event(), [], LiveStats()
    device = ScriptedDevice(
        [ScriptedDevice.Packet(first), None, ScriptedDevice.Packet(second, [0])], stop
    )
    poll_nd_device(device, stop, lambda events: emitted.append(events) or True, stats)
    events = np.concatenate(emitted)
    assert events.dtype == EVENT_DTYPE
    assert events.tolist() == [(5, 1, 2, 1), (7, 3, 4, 0), (9, 5, 6, 1)]
    assert stats.device_overflows == 1
