"""Everything that produces events: file readers and writers, live sources, the DVS emulator."""

from spikecut.sources.events import (
    EVENT_DTYPE,
    StreamInfo,
    as_events,
    check_events,
    empty_events,
    make_events,
)

__all__ = ["EVENT_DTYPE", "StreamInfo", "as_events", "check_events", "empty_events", "make_events"]
