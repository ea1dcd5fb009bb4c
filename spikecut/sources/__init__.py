"""Everything that produces events: file readers and writers, live sources, the DVS emulator.

File API (readers are imported lazily, so importing this package stays cheap):

- `read_events(path)` -> (events, StreamInfo): a whole file.
- `open_reader(path)` -> reader: a context manager yielding time-ordered chunks.
- `detect_format(path)` -> format name.
- `write_events(path, events, info)` / `open_writer(path, info)`: by extension or `format=`.
- `open_source(path_or_reader, speed=..., loop=...)` -> async `EventSource` replaying a file.
"""

from spikecut.sources.events import (
    EVENT_DTYPE,
    StreamInfo,
    as_events,
    check_events,
    empty_events,
    make_events,
)
from spikecut.sources.files import (
    FORMATS,
    detect_format,
    open_reader,
    open_writer,
    read_events,
    write_events,
)
from spikecut.sources.reader import EventReader, EventValidator, ReadStats
from spikecut.sources.replay import FileSource, open_source

__all__ = [
    "EVENT_DTYPE",
    "FORMATS",
    "EventReader",
    "EventValidator",
    "FileSource",
    "ReadStats",
    "StreamInfo",
    "as_events",
    "check_events",
    "detect_format",
    "empty_events",
    "make_events",
    "open_reader",
    "open_source",
    "open_writer",
    "read_events",
    "write_events",
]
