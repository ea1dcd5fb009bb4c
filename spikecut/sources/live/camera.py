"""USB event cameras through dv-processing (iniVation) or neuromorphic-drivers (Prophesee EVK3/4,
iniVation DAVIS346/DVXplorer, ...), both from the optional `camera` extra.

Discovery is exercised by the tests with the real libraries (which find no camera there). The
streaming part, from opening a device on, is written from the installed libraries' documented
APIs (dv-processing 2.0.4, neuromorphic-drivers 0.18.2) and is UNTESTED AGAINST HARDWARE: no
camera was available while it was written.

- dv-processing: `dv.io.camera.discover()` lists devices; `dv.io.camera.open(descriptor)` opens
  one. A camera is a dv-processing input like the network reader, so the same polling worker
  thread reads it (`getNextEventBatch()` does not block). Timestamps are Unix-epoch µs.
- neuromorphic-drivers: `nd.list_devices()` lists devices; `nd.open(serial=...,
  iterator_timeout=...)` opens one; iterating the device yields `(status, packet)` with
  `packet.polarity_events` (fields t, x, y, on) or None when the timeout passed without data.
  The timeout lets the worker thread notice that the source is closing. Timestamps count µs
  from the device's start (`time_origin="sensor"`). USB packets the driver had to drop
  (`polarity_events_overflow_indices`) are counted in `stats.device_overflows`.

An unplugged camera is a disconnect like any other: the source rediscovers it (by serial)
with backoff and counts the gap.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import numpy as np

from spikecut.errors import ConfigError, SourceUnavailableError
from spikecut.sources.events import make_events
from spikecut.sources.live.base import LiveSource, LiveStats, PeerUnavailable
from spikecut.sources.live.dv import CAMERA_EXTRA, poll_dv_input
from spikecut.sources.live.raw import prophesee_jitter_us

#: `driver=` values: "auto" tries dv-processing, then neuromorphic-drivers.
CAMERA_DRIVERS = ("auto", "dv", "nd")
_LIBRARIES = {
    "dv": ("dv_processing", "dv-processing"),
    "nd": ("neuromorphic_drivers", "neuromorphic-drivers"),
}


@dataclass(frozen=True)
class CameraFound:
    driver: str  # "dv" or "nd"
    model: str
    serial: str | None
    error: str | None = None  # a device listed but not usable (e.g. no USB permission)
    descriptor: Any = field(default=None, compare=False, repr=False)


@dataclass
class Discovery:
    """Cameras found, and one line per library saying what searching it gave."""

    cameras: list[CameraFound] = field(default_factory=list)
    searched: list[str] = field(default_factory=list)
    installed: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return "; ".join(self.searched)


def _import(driver: str) -> Any | None:
    module, _ = _LIBRARIES[driver]
    try:
        return __import__(module)
    except ImportError:
        return None


def _label(driver: str) -> str:
    _, distribution = _LIBRARIES[driver]
    try:
        return f"{distribution} {metadata.version(distribution)}"
    except metadata.PackageNotFoundError:
        return distribution


def _discover_dv(dv: Any) -> list[CameraFound]:
    return [
        CameraFound(
            driver="dv",
            model=str(descriptor.cameraModel),
            serial=str(descriptor.serialNumber),
            descriptor=descriptor,
        )
        for descriptor in dv.io.camera.discover()
    ]


def _discover_nd(nd: Any) -> list[CameraFound]:
    return [
        CameraFound(
            driver="nd",
            model=listed.name.value,
            serial=listed.serial,
            error=listed.error,
        )
        for listed in nd.list_devices()
    ]


def discover_cameras(driver: str = "auto") -> Discovery:
    """Ask each camera library (all, or the one `driver` names) for connected devices."""
    if driver not in CAMERA_DRIVERS:
        raise ConfigError(f"camera option 'driver' must be one of {CAMERA_DRIVERS}, got {driver!r}")
    discovery = Discovery()
    for name in ("dv", "nd") if driver == "auto" else (driver,):
        library = _import(name)
        if library is None:
            discovery.searched.append(f"{_LIBRARIES[name][1]}: not installed")
            continue
        label = _label(name)
        discovery.installed.append(name)
        try:
            found = (_discover_dv if name == "dv" else _discover_nd)(library)
        except Exception as exc:  # the libraries raise bare RuntimeErrors from libusb
            hint = " (is /dev/bus/usb visible to this process?)" if name == "nd" else ""
            discovery.searched.append(f"{label}: USB enumeration failed: {exc}{hint}")
            continue
        discovery.cameras.extend(found)
        listed = ", ".join(_describe(camera) for camera in found) or "no camera"
        discovery.searched.append(f"{label}: {listed}")
    return discovery


def _describe(camera: CameraFound) -> str:
    text = f"{camera.model} serial {camera.serial or '?'}"
    return f"{text} (unusable: {camera.error})" if camera.error else text


def nd_events(polarity_events: np.ndarray) -> np.ndarray:
    """neuromorphic-drivers polarity events (t <u8, x <u2, y <u2, on ?) as `EVENT_DTYPE`."""
    columns = (polarity_events[name] for name in ("t", "x", "y", "on"))
    return make_events(*columns)


def poll_nd_device(
    device: Any,
    stop: threading.Event,
    emit: Callable[[np.ndarray], bool],
    stats: LiveStats,
) -> None:
    """Worker-thread loop for a neuromorphic-drivers device opened with an iterator timeout."""
    while not stop.is_set():
        try:
            _status, packet = next(device)
        except StopIteration:
            raise PeerUnavailable("the camera stopped streaming") from None
        except Exception as exc:
            raise PeerUnavailable(f"neuromorphic-drivers read failed: {exc}") from None
        if packet is None:  # iterator timeout without data
            continue
        overflows = getattr(packet, "polarity_events_overflow_indices", None)
        if overflows is not None:
            stats.device_overflows += len(overflows)
        polarity_events = getattr(packet, "polarity_events", None)
        if (
            polarity_events is not None
            and len(polarity_events)
            and not emit(nd_events(polarity_events))
        ):
            return


class CameraSource(LiveSource):
    """A USB event camera, optionally chosen by serial number and driver library."""

    def __init__(
        self,
        serial: str | None = None,
        *,
        driver: str = "auto",
        name: str | None = None,
        poll_interval_s: float = 0.001,
        iterator_timeout_s: float = 0.05,
        jitter_us: int | None = None,
        **options: Any,
    ) -> None:
        if driver not in CAMERA_DRIVERS:
            raise ConfigError(
                f"camera option 'driver' must be one of {CAMERA_DRIVERS}, got {driver!r}"
            )
        if jitter_us is None:  # Prophesee sensors emit events a few µs out of order
            jitter_us = prophesee_jitter_us()
        super().__init__(name or _camera_uri(serial, driver), jitter_us=jitter_us, **options)
        self.serial = serial
        self.driver = driver
        self.poll_interval_s = poll_interval_s
        self.iterator_timeout_s = iterator_timeout_s
        self.camera: CameraFound | None = None

    async def _open(self) -> tuple[str, Any]:
        discovery = await asyncio.to_thread(discover_cameras, self.driver)
        if not discovery.installed:
            raise SourceUnavailableError(
                f"{self.name}: no camera library is installed ({discovery.summary()}); "
                f"{CAMERA_EXTRA}"
            )
        usable = [
            camera
            for camera in discovery.cameras
            if camera.error is None and self.serial in (None, camera.serial)
        ]
        if not usable:
            wanted = (
                "no event camera" if self.serial is None else f"no camera with serial {self.serial}"
            )
            raise PeerUnavailable(f"{wanted} found (searched {discovery.summary()})")
        camera = usable[0]
        try:
            device, size = await asyncio.to_thread(self._open_device, camera)
        except (RuntimeError, IndexError, OSError) as exc:
            raise PeerUnavailable(f"could not open {_describe(camera)}: {exc}") from None
        connection = (camera.driver, device)
        try:
            if size is None:
                raise SourceUnavailableError(
                    f"{self.name}: {_describe(camera)} has no event output"
                )
            if camera.driver == "dv":
                self._announce(*size, time_origin="unix", format="dv-camera")
            else:
                self._announce(*size, time_origin="sensor", format="nd")
        except BaseException:
            await self._close_connection(connection)
            raise
        self.camera = camera
        return connection

    def _open_device(self, camera: CameraFound) -> tuple[Any, tuple[int, int] | None]:
        """Open in a worker thread (USB set-up blocks); returns the device and its sensor size."""
        if camera.driver == "dv":
            device = _import("dv").io.camera.open(camera.descriptor)
            return device, device.getEventResolution()
        device = _import("nd").open(serial=camera.serial, iterator_timeout=self.iterator_timeout_s)
        properties = device.properties()
        return device, (properties.width, properties.height)

    async def _pump(self, connection: tuple[str, Any]) -> None:
        driver, device = connection
        if driver == "dv":
            # A DAVIS also streams frames and IMU samples; they are read and dropped.
            discard = tuple(
                getter
                for available, getter in (
                    (device.isFrameStreamAvailable(), device.getNextFrame),
                    (device.isImuStreamAvailable(), device.getNextImuBatch),
                    (device.isTriggerStreamAvailable(), device.getNextTriggerBatch),
                )
                if available
            )
            await self._run_worker(
                lambda stop, emit: poll_dv_input(device, stop, emit, self.poll_interval_s, discard)
            )
        else:
            await self._run_worker(
                lambda stop, emit: poll_nd_device(device, stop, emit, self.stats)
            )

    async def _close_connection(self, connection: tuple[str, Any]) -> None:
        driver, device = connection
        if driver == "nd":
            await asyncio.to_thread(device.close)


def _camera_uri(serial: str | None, driver: str) -> str:
    query = "" if driver == "auto" else f"?driver={driver}"
    return f"camera:{serial or ''}{query}"
