"""Event filters: hot-pixel mask, refractory period, background-activity (denoise) filter.

The per-event rules live in small Numba functions shared by the standalone `EventFilter` below and
by the fused binning kernel in `spikecut.pipeline.binning`, so a filter means exactly the same thing
whether it runs alone or inside the windowing stage. State (the last timestamp seen at each pixel)
is kept in arrays owned by the caller, so filtering works incrementally: splitting a stream into
chunks anywhere gives the same result as filtering it in one go.

Semantics, and where they deliberately differ from tonic:

- Denoise (background-activity filter) follows tonic's `Denoise`: an event is kept iff one of its
  4-connected neighbours (not the pixel itself, not diagonals) fired less than `filter_us` before
  it (`t - t_neighbour < filter_us`); every event that reaches the filter updates its pixel's
  memory, kept or not. tonic initialises its memory to `filter_time`, as if every pixel had fired at
  t = 0, so it keeps nearly every event in the first `filter_time` microseconds of a recording that
  starts near t = 0. We start from "never fired", so an isolated event is dropped no matter its
  timestamp. For events with t >= filter_us the two agree exactly.
- Refractory follows tonic's `RefractoryPeriod`: an event is dropped iff its own pixel (either
  polarity) fired at most `refractory_us` before it (`t - t_last <= refractory_us`), and the pixel's
  memory is updated by every event, kept or not, so a burst keeps the pixel silenced. tonic
  initialises the memory to `-refractory_period`, which drops an event at exactly t = 0; we don't.
- Hot pixels: a fixed list of (x, y) sensor coordinates whose events are always dropped (tonic's
  `DropPixel` with explicit coordinates). `hot_pixels_by_rate` finds them the way tonic's
  `identify_hot_pixel` does.

Order inside the pipeline: ingest validation, hot-pixel mask, refractory, denoise. Hot pixels are
removed first so they can neither suppress nor support their neighbours.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from numba import njit

from spikecut.errors import ConfigError
from spikecut.sources.events import StreamInfo, as_events

#: "This pixel never fired". Far enough below any accepted timestamp that `t - NEVER` and
#: `NEVER + filter_us` cannot overflow (ingest rejects |t| > T_LIMIT).
NEVER = np.int64(-(2**62))
#: Timestamps beyond +-T_LIMIT µs (about 73,000 years) are rejected at ingest as garbage.
T_LIMIT = np.int64(2**61)
#: Upper bound for every duration in a spec (about 12.7 days).
MAX_DURATION_US = 2**40

# Outcome codes of `_filter_event`.
KEEP = 0
REJECT_HOT = 1
REJECT_REFRACTORY = 2
REJECT_DENOISE = 3


@njit(cache=True, nogil=True, inline="always")
def outside_sensor(e: Any, width: int, height: int) -> bool:
    """Ingest validation of one event: coordinates outside the sensor, polarity > 1, or |t| >
    T_LIMIT (one branch-free test; the unsigned sum is huge for t < -T_LIMIT)."""
    return (
        (np.int64(e.x) >= width)
        | (np.int64(e.y) >= height)
        | (e.p > 1)
        | (np.uint64(e.t + T_LIMIT) > np.uint64(2 * T_LIMIT))
    )


@njit(cache=True, nogil=True)
def _filter_event(
    t: np.int64,
    x: np.int64,
    y: np.int64,
    width: np.int64,
    hot: np.ndarray | None,
    refractory_us: np.int64,
    refractory_memory: np.ndarray | None,
    filter_us: np.int64,
    denoise_memory: np.ndarray | None,
) -> int:
    """Apply hot-pixel mask, refractory and denoise to one in-sensor event; update the memories.

    A filter is off when its array is None: Numba compiles it out, which works because these are
    arguments of a compiled function (so no Numba-level inlining here). Arrays are indexed by
    `padded_pixel`: a one-pixel border that never fires spares the neighbour test its bounds
    checks. Coordinates must already be inside the sensor.
    """
    stride = width + 2
    pixel = (y + 1) * stride + x + 1
    if hot is not None:  # noqa: SIM102 (Numba prunes only a bare `is None` test)
        if hot[pixel] != 0:
            return REJECT_HOT
    if refractory_memory is not None:
        last = refractory_memory[pixel]
        refractory_memory[pixel] = t
        if t - last <= refractory_us:
            return REJECT_REFRACTORY
    if denoise_memory is not None:
        denoise_memory[pixel] = t
        horizon = t - filter_us  # a neighbour supports t iff it fired after `horizon`
        supported = (
            (denoise_memory[pixel - 1] > horizon)
            | (denoise_memory[pixel + 1] > horizon)
            | (denoise_memory[pixel - stride] > horizon)
            | (denoise_memory[pixel + stride] > horizon)
        )
        if not supported:
            return REJECT_DENOISE
    return KEEP


@njit(cache=True, nogil=True)
def _filter_chunk(
    events: np.ndarray,
    width: np.int64,
    height: np.int64,
    hot: np.ndarray | None,
    refractory_us: np.int64,
    refractory_memory: np.ndarray | None,
    filter_us: np.int64,
    denoise_memory: np.ndarray | None,
    out: np.ndarray,
    counts: np.ndarray,
) -> int:
    """Copy kept events to `out`, return how many; add rejections to `counts` (outside, hot,
    refractory, denoise)."""
    n_kept = 0
    outside = 0
    rejected = np.zeros(4, dtype=np.int64)
    for i in range(events.shape[0]):
        e = events[np.uint64(i)]
        if outside_sensor(e, width, height):
            outside += 1
            continue
        t = e.t
        x = np.int64(e.x)
        y = np.int64(e.y)
        outcome = _filter_event(
            t, x, y, width, hot, refractory_us, refractory_memory, filter_us, denoise_memory
        )
        out[np.uint64(n_kept)] = e  # written always, kept only if the count moves on
        n_kept += outcome == KEEP
        rejected[outcome] += 1
    counts[0] += outside
    for k in range(1, 4):
        counts[k] += rejected[k]
    return n_kept


def padded_pixels(width: int, height: int) -> int:
    """Size of a per-pixel filter array: the sensor plus a one-pixel border."""
    return (width + 2) * (height + 2)


def check_duration(name: str, value: object, *, allow_zero: bool = False) -> int:
    """A duration option in µs: an int in 1..2**40 (0 allowed when `allow_zero`)."""
    low = 0 if allow_zero else 1
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or not low <= value <= MAX_DURATION_US
    ):
        raise ConfigError(f"{name} must be an integer number of µs in {low}..2**40, got {value!r}")
    return int(value)


def hot_pixel_mask(hot_pixels: Iterable[Sequence[int]], width: int, height: int) -> np.ndarray:
    """uint8 mask of the given (x, y) pixels in the padded layout `_filter_event` uses."""
    mask = np.zeros(padded_pixels(width, height), dtype=np.uint8)
    for item in hot_pixels:
        if len(item) != 2:
            raise ConfigError(f"hot pixel {item!r} is not an (x, y) pair")
        x, y = item
        if not (0 <= int(x) < width and 0 <= int(y) < height):
            raise ConfigError(f"hot pixel ({x}, {y}) is outside the {width}x{height} sensor")
        mask[(int(y) + 1) * (width + 2) + int(x) + 1] = 1
    return mask


def hot_pixels_by_rate(
    events: np.ndarray, width: int, height: int, max_rate_hz: float
) -> list[tuple[int, int]]:
    """(x, y) of pixels firing faster than `max_rate_hz` over the recording (tonic's rule).

    Like tonic's `identify_hot_pixel`: a pixel is hot when its event count exceeds
    `max_rate_hz * (t_last - t_first) * 1e-6`. Events outside the sensor are ignored.
    """
    events = as_events(events)
    inside = (events["x"] < width) & (events["y"] < height)
    events = events[inside]
    if events.size == 0:
        return []
    duration_us = int(events["t"].max()) - int(events["t"].min())
    counts = np.bincount(
        events["y"].astype(np.int64) * width + events["x"], minlength=width * height
    )
    hot = np.flatnonzero(counts > max_rate_hz * duration_us * 1e-6)
    return [(int(i % width), int(i // width)) for i in hot]


@dataclass
class FilterCounts:
    """Events removed by each rule (cumulative)."""

    outside_sensor: int = 0
    hot_pixel: int = 0
    refractory: int = 0
    denoise: int = 0

    def total(self) -> int:
        return sum(getattr(self, f.name) for f in fields(self))


class EventFilter:
    """Incremental hot-pixel / refractory / denoise filter over event chunks.

    Call it on successive chunks of one stream; it returns the kept events of each chunk (a new
    array) and accumulates what it removed in `counts`. Events outside the sensor are dropped and
    counted, never indexed.
    """

    def __init__(
        self,
        sensor: StreamInfo | tuple[int, ...],
        *,
        filter_us: int | None = None,
        refractory_us: int | None = None,
        hot_pixels: Iterable[Sequence[int]] = (),
    ) -> None:
        self.width, self.height = sensor_dims(sensor)
        self.filter_us = 0 if filter_us is None else check_duration("filter_us", filter_us)
        self.refractory_us = (
            0
            if refractory_us is None
            else check_duration("refractory_us", refractory_us, allow_zero=True)
        )
        self._hot, self._refractory, self._denoise = filter_state(
            self.width, self.height, hot_pixels, refractory_us is not None, filter_us is not None
        )
        self._counts = np.zeros(4, dtype=np.int64)

    @property
    def counts(self) -> FilterCounts:
        return FilterCounts(*(int(c) for c in self._counts))

    def reset(self) -> None:
        """Forget all history (start of a new, unrelated stream)."""
        for memory in (self._refractory, self._denoise):
            if memory is not None:
                memory.fill(NEVER)
        self._counts.fill(0)

    def __call__(self, events: np.ndarray) -> np.ndarray:
        events = np.ascontiguousarray(as_events(events))
        out = np.empty_like(events)
        n_kept = _filter_chunk(
            events,
            self.width,
            self.height,
            self._hot,
            self.refractory_us,
            self._refractory,
            self.filter_us,
            self._denoise,
            out,
            self._counts,
        )
        return out[:n_kept]


def filter_state(
    width: int,
    height: int,
    hot_pixels: Iterable[Sequence[int]],
    refractory: bool,
    denoise: bool,
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """(hot mask, refractory memory, denoise memory) for `_filter_event`; None = filter off."""
    pixels = tuple(hot_pixels)
    hot = hot_pixel_mask(pixels, width, height) if pixels else None
    size = padded_pixels(width, height)
    return (
        hot if hot is not None and hot.any() else None,
        np.full(size, NEVER) if refractory else None,
        np.full(size, NEVER) if denoise else None,
    )


def denoise(events: np.ndarray, sensor: StreamInfo | tuple[int, ...], filter_us: int) -> np.ndarray:
    """Background-activity filter over a whole recording (see the module docstring)."""
    return EventFilter(sensor, filter_us=filter_us)(events)


def sensor_dims(sensor: StreamInfo | tuple[int, ...]) -> tuple[int, int]:
    """(width, height) from a `StreamInfo` or a tonic-style (W, H[, P]) tuple, validated."""
    if isinstance(sensor, StreamInfo):
        return int(sensor.width), int(sensor.height)
    if (
        not isinstance(sensor, (tuple, list))
        or len(sensor) not in (2, 3)
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in sensor)
    ):
        raise ConfigError(
            f"sensor must be a StreamInfo or a (width, height[, polarities]) tuple, got {sensor!r}"
        )
    width, height = int(sensor[0]), int(sensor[1])
    if not (0 < width <= 65535 and 0 < height <= 65535):
        raise ConfigError(f"sensor size must be in 1..65535 pixels, got {width}x{height}")
    return width, height


__all__ = [
    "EventFilter",
    "filter_state",
    "FilterCounts",
    "denoise",
    "hot_pixel_mask",
    "hot_pixels_by_rate",
    "sensor_dims",
]
