"""Live event sources: DV network streams, Prophesee raw byte streams, USB cameras.

Every source here follows `spikecut.sources.base.EventSource` with `live = True`, reconnects
with backoff when its peer goes away and keeps counters in `stats` (`LiveStats`). Most users
name a source by URI through `spikecut.sources.uri.open_uri`. Optional libraries (dv-processing,
neuromorphic-drivers) are imported only when a source that needs them is built.
"""

from spikecut.sources.live.base import LiveSource, LiveStats, ReconnectPolicy
from spikecut.sources.live.camera import CameraSource, discover_cameras
from spikecut.sources.live.dv import DvNetworkSource
from spikecut.sources.live.raw import PipeTransport, RawStreamSource, StdinTransport, TcpTransport

__all__ = [
    "CameraSource",
    "DvNetworkSource",
    "LiveSource",
    "LiveStats",
    "PipeTransport",
    "RawStreamSource",
    "ReconnectPolicy",
    "StdinTransport",
    "TcpTransport",
    "discover_cameras",
]
