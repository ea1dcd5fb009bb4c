"""Live event sources: DV network streams, Prophesee raw byte streams, USB cameras.

Every source here follows `spikecut.sources.base.EventSource` with `live = True`, reconnects
with backoff when its peer goes away and keeps counters in `stats` (`LiveStats`). Most users
name a source by URI through `spikecut.sources.uri.open_uri`.
"""

from spikecut.sources.live.base import LiveSource, LiveStats, ReconnectPolicy
from spikecut.sources.live.dv import DvNetworkSource

__all__ = ["DvNetworkSource", "LiveSource", "LiveStats", "ReconnectPolicy"]
