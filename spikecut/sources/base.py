"""The contract every event source meets, file replay and live camera alike.

A source is an async context manager and an async iterator of event chunks (`EVENT_DTYPE` arrays,
time-ordered, possibly empty). Consumers never learn where events come from beyond `info` and
`live`: the windowing stage uses `live` to decide whether a silent stream must still produce
(empty) windows on wall-clock time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

import numpy as np

from spikecut.sources.events import StreamInfo


@runtime_checkable
class EventSource(Protocol):
    info: StreamInfo
    live: bool

    async def __aenter__(self) -> EventSource: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    def __aiter__(self) -> AsyncIterator[np.ndarray]: ...
