"""Events to frames: the window spec, the incremental Numba kernel, and whole-recording binning.

One Numba kernel family turns event chunks into per-window count frames of shape (P, H', W').
It is incremental: every bit of state (window bookkeeping, filter memories, partly filled frames)
lives in arrays owned by a `FrameBuilder`, so feeding a recording in one piece or in chunks split
anywhere gives bit-identical frames. The asyncio stage (`spikecut.pipeline.windowing`) and the
training path (`frames_for_recording`) both drive the same `FrameBuilder`, so what the network sees
live is exactly what it was trained on.

Windows (see docs/binning.md for the full rules and every difference from tonic):

- `window_us` (with optional `stride_us <= window_us` for overlap): window k covers sensor time
  [origin + k*stride, origin + k*stride + window_us), origin = the first valid event. This is the
  streaming mode: boundaries are known before any event arrives.
- `event_count` (with optional `stride_events`): window k holds accepted events
  [k*stride, k*stride + event_count) in stream order.
- `n_bins` over `span_us`: bin k covers [origin + ceil(k*span/n), origin + ceil((k+1)*span/n)),
  so bins tile the span exactly and no event is lost to rounding. With `span_us=None` the span is
  the recording's own (first valid event to last, inclusive): this needs the whole recording, so
  only `frames_for_recording` accepts it; the streaming stage needs `span_us` fixed in the spec,
  and then keeps producing bins of consecutive spans (window k is bin k % n_bins of span
  k // n_bins).

A time window is complete once an event at or after its end arrives (or, for live sources, once the
wall clock says so). Events older than the end of the newest completed window are "late": dropped
and counted. A jump in time of more than `max_gap_us` (forward or backward) resynchronises: open
windows are closed as partial and windows restart at the new event, so a corrupt timestamp cannot
make the stage spin out billions of empty windows or drop everything after it.

Per event, in order: ingest validation (coordinates outside the sensor, polarity > 1, or |t| beyond
2**61 µs are dropped and counted; nothing unchecked ever indexes an array), late check, hot-pixel
mask, refractory filter, denoise filter, ROI crop, downsample, count. Counts saturate at the
effective clip (`min(clip, max of dtype)`, 2**24 for float32), and every saturated increment is
counted as `clipped`: a count never wraps around.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np
from numba import njit

from spikecut.errors import ConfigError, EventDataError
from spikecut.pipeline.filters import (
    MAX_DURATION_US,
    NEVER,
    T_LIMIT,
    _filter_event,
    check_duration,
    filter_state,
    outside_sensor,
    sensor_dims,
)
from spikecut.sources.events import StreamInfo, as_events

# --- the spec ------------------------------------------------------------------------------------

FRAME_DTYPES = ("float32", "float16", "float64", "uint8", "int16", "uint16", "int32")
END_OPTIONS = ("emit", "drop")
_INT32_MAX = 2**31 - 1
_MAX_BINS = 1_000_000
_INT_OPTIONS = (
    "window_us",
    "stride_us",
    "event_count",
    "stride_events",
    "n_bins",
    "span_us",
    "polarities",
    "clip",
    "downsample",
    "filter_us",
    "refractory_us",
    "max_gap_us",
)
#: frames_for_recording refuses outputs beyond this size instead of exhausting memory.
_MAX_OUTPUT_BYTES = 16 * 2**30
_INITIAL_OUTPUT_BYTES = 2 * 2**30
_RING_SLACK_BYTES = 2**19


def _check_int(name: str, value: object, low: int, high: int) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or not low <= value <= high
    ):
        raise ConfigError(f"WindowSpec.{name} must be an integer in {low}..{high}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class WindowSpec:
    """How events become frames. Frozen, hashable and JSON-safe via `to_dict`/`from_dict`.

    Exactly one of `window_us`, `event_count`, `n_bins` chooses the window kind. All durations are
    integer microseconds; `roi` is (x, y, width, height) in sensor pixels; `hot_pixels` are (x, y)
    sensor pixels; `downsample` divides the (cropped) frame by an integer factor, rounding the size
    up so edge pixels are kept.
    """

    window_us: int | None = None
    stride_us: int | None = None
    event_count: int | None = None
    stride_events: int | None = None
    n_bins: int | None = None
    span_us: int | None = None
    polarities: int = 2
    clip: int | None = None
    dtype: str = "float32"
    downsample: int = 1
    roi: tuple[int, int, int, int] | None = None
    filter_us: int | None = None
    refractory_us: int | None = None
    hot_pixels: tuple[tuple[int, int], ...] = ()
    max_gap_us: int | None = 60_000_000

    def __post_init__(self) -> None:
        kinds = [n for n in ("window_us", "event_count", "n_bins") if getattr(self, n) is not None]
        if len(kinds) != 1:
            raise ConfigError(
                "WindowSpec needs exactly one of window_us, event_count, n_bins; "
                f"got {kinds or 'none'}"
            )
        if self.window_us is not None:
            check_duration("WindowSpec.window_us", self.window_us)
            if self.stride_us is not None:
                check_duration("WindowSpec.stride_us", self.stride_us)
                if self.stride_us > self.window_us:
                    raise ConfigError(
                        f"WindowSpec.stride_us ({self.stride_us}) must not exceed window_us "
                        f"({self.window_us}): events between windows would be lost"
                    )
        elif self.stride_us is not None:
            raise ConfigError("WindowSpec.stride_us only applies to window_us windows")
        if self.event_count is not None:
            _check_int("event_count", self.event_count, 1, MAX_DURATION_US)
            if self.stride_events is not None:
                _check_int("stride_events", self.stride_events, 1, self.event_count)
        elif self.stride_events is not None:
            raise ConfigError("WindowSpec.stride_events only applies to event_count windows")
        if self.n_bins is not None:
            _check_int("n_bins", self.n_bins, 1, _MAX_BINS)
            if self.span_us is not None:
                check_duration("WindowSpec.span_us", self.span_us)
        elif self.span_us is not None:
            raise ConfigError("WindowSpec.span_us only applies to n_bins windows")
        if self.polarities not in (1, 2):
            raise ConfigError(f"WindowSpec.polarities must be 1 or 2, got {self.polarities!r}")
        if self.clip is not None:
            _check_int("clip", self.clip, 1, _INT32_MAX)
        if self.dtype not in FRAME_DTYPES:
            raise ConfigError(f"WindowSpec.dtype must be one of {FRAME_DTYPES}, got {self.dtype!r}")
        _check_int("downsample", self.downsample, 1, 65535)
        if self.roi is not None:
            roi = tuple(self.roi)
            if len(roi) != 4:
                raise ConfigError(f"WindowSpec.roi must be (x, y, width, height), got {self.roi!r}")
            for name, value in zip(("x", "y", "width", "height"), roi, strict=True):
                _check_int(f"roi.{name}", value, 0 if name in "xy" else 1, 65535)
            object.__setattr__(self, "roi", tuple(int(v) for v in roi))
        if self.filter_us is not None:
            check_duration("WindowSpec.filter_us", self.filter_us)
        if self.refractory_us is not None:
            check_duration("WindowSpec.refractory_us", self.refractory_us, allow_zero=True)
        pixels = []
        for item in self.hot_pixels:
            if isinstance(item, (str, bytes)) or len(item) != 2:
                raise ConfigError(f"WindowSpec.hot_pixels entries must be (x, y), got {item!r}")
            pixels.append(
                (
                    _check_int("hot_pixels.x", item[0], 0, 65535),
                    _check_int("hot_pixels.y", item[1], 0, 65535),
                )
            )
        object.__setattr__(self, "hot_pixels", tuple(sorted(set(pixels))))
        if self.max_gap_us is not None:
            check_duration("WindowSpec.max_gap_us", self.max_gap_us)
        for name in _INT_OPTIONS:  # numpy integers become plain ints: the spec must be JSON-safe
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, int(value))

    # -- derived values --

    @property
    def kind(self) -> str:
        return "time" if self.window_us is not None else "count" if self.event_count else "bins"

    @property
    def streamable(self) -> bool:
        """False only for n_bins over the recording's own span (needs the whole recording)."""
        return not (self.n_bins is not None and self.span_us is None)

    def frame_shape(self, sensor: StreamInfo | tuple[int, ...]) -> tuple[int, int, int]:
        """(P, H', W') of the frames this spec makes for a sensor."""
        return self._shape(*sensor_dims(sensor))

    def _shape(self, width: int, height: int) -> tuple[int, int, int]:
        x0, y0, roi_w, roi_h = self._roi(width, height)
        f = self.downsample
        return (self.polarities, -(-roi_h // f), -(-roi_w // f))

    def _roi(self, width: int, height: int) -> tuple[int, int, int, int]:
        if self.roi is None:
            return (0, 0, width, height)
        x0, y0, roi_w, roi_h = self.roi
        if x0 + roi_w > width or y0 + roi_h > height:
            raise ConfigError(
                f"WindowSpec.roi {self.roi} (x, y, width, height) does not fit the "
                f"{width}x{height} sensor"
            )
        return self.roi

    def with_(self, **changes: Any) -> WindowSpec:
        return replace(self, **changes)

    # -- serialisation --

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only (lists for tuples); `from_dict` inverts it exactly."""
        out = asdict(self)
        out["roi"] = None if self.roi is None else list(self.roi)
        out["hot_pixels"] = [list(p) for p in self.hot_pixels]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WindowSpec:
        if not isinstance(data, dict):
            raise ConfigError(f"WindowSpec.from_dict expects a dict, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"WindowSpec has no option(s) {unknown}; known: {sorted(known)}")
        kwargs = dict(data)
        if kwargs.get("roi") is not None:
            kwargs["roi"] = tuple(kwargs["roi"])
        if "hot_pixels" in kwargs:
            hot = kwargs["hot_pixels"]
            if not isinstance(hot, (list, tuple)):
                raise ConfigError(f"WindowSpec.hot_pixels must be a list of [x, y], got {hot!r}")
            kwargs["hot_pixels"] = tuple(
                tuple(p) if isinstance(p, (list, tuple)) else p for p in hot
            )
        return cls(**kwargs)


# --- what comes out ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Drops:
    """Events (and windows) that did not make it into frames, by reason.

    On a `Window` these count what happened since the previous window was produced (stream order);
    `FrameBuilder.totals` and `BinnedRecording.drops` hold the cumulative numbers.
    """

    outside_sensor: int = 0  # x/y outside the sensor, polarity > 1 or absurd timestamp
    hot_pixel: int = 0
    refractory: int = 0
    denoise: int = 0
    late: int = 0  # older than an already closed window (or before the first event)
    outside_roi: int = 0
    clipped: int = 0  # increments absorbed by saturation at the effective clip
    resyncs: int = 0  # time jumps larger than max_gap_us
    backpressure_windows: int = 0  # windows discarded by the drop_oldest policy
    backpressure_events: int = 0  # events inside those windows
    end_of_stream: int = 0  # events inside partial windows dropped by end="drop"

    @property
    def filtered(self) -> int:
        return self.hot_pixel + self.refractory + self.denoise + self.outside_roi

    def __add__(self, other: Drops) -> Drops:
        return Drops(*(getattr(self, n) + getattr(other, n) for n in _DROP_FIELDS))


@dataclass(frozen=True, eq=False)
class Window:
    """One frame for the network, and where it came from.

    `frames` ([P, H', W'] of the spec's dtype) is a fresh array owned by the receiver: the stage
    never writes to it again. `t_end_us` is exclusive. `closed_at` is the `time.perf_counter()`
    value when the stage learned the window was complete (the start point for decision latency).
    `partial` marks windows cut short by the end of the stream or a resync;
    `closed_by_wall_clock` marks windows a live source's silence closed.
    """

    index: int
    frames: np.ndarray
    t_start_us: int
    t_end_us: int
    n_events: int
    closed_at: float
    partial: bool = False
    closed_by_wall_clock: bool = False
    drops: Drops = field(default_factory=Drops)


# --- the kernel ----------------------------------------------------------------------------------

MODE_TIME, MODE_COUNT, MODE_BINS = 0, 1, 2

# cfg: read-only parameters of one builder
(
    C_WIDTH,
    C_HEIGHT,
    C_MODE,
    C_WINDOW,
    C_STRIDE,
    C_SPAN,
    C_NBINS,
    C_PLANE,
    C_REFRACTORY_US,
    C_FILTER_US,
    C_CAP,
    C_RING,
    C_MAX_GAP,
    C_ROOM,
    N_CFG,
) = range(15)

# st: mutable state carried across chunks
(
    S_HAVE_ORIGIN,
    S_ORIGIN,
    S_CLOCK,
    S_FLOOR,
    S_NEXT_END,
    S_K_EMIT,
    S_K_CLOSE,
    S_ACCEPTED,
    S_SEG_VALID,
    S_SEG_LO,
    S_SEG_HI,
    S_SEG_K,
    S_SEG_SLOT,
    S_SEG_N,
    S_SEG_COUNT,
    S_SEG_TFIRST,
    S_SEG_TLAST,
    S_STATUS,
    N_ST,
) = range(19)

# status after a kernel call
RUN_DONE, RUN_DRAIN, RUN_GAP = 0, 1, 2

# cnt: cumulative counters (indices 1..3 are the filter outcome codes)
(
    K_OUTSIDE,
    K_HOT,
    K_REFRACTORY,
    K_DENOISE,
    K_LATE,
    K_ROI,
    K_CLIPPED,
    K_RESYNC,
    K_END,
    N_CNT,
) = range(10)

_I64_MAX = np.iinfo(np.int64).max
# `_lookup_table` entries: outside the sensor (or polarity > 1) makes any sum of three entries
# negative; an in-sensor coordinate outside the ROI makes it at least _CROPPED (more than any
# frame holds, 2 * 65535**2) and less than _LUT_LIMIT.
_OUTSIDE = -(2**40)
_CROPPED = 2**34
_LUT_LIMIT = np.uint64(2**36)
_LUT_ROWS, _LUT_POLS = np.uint64(65536), np.uint64(2 * 65536)  # offsets in `_lookup_table`
_I64_MIN = np.iinfo(np.int64).min


@njit(cache=True, nogil=True, inline="always")
def _start(cfg: np.ndarray, origin: np.int64, k: np.int64) -> np.int64:
    """Sensor time at which window k starts (time and bins modes)."""
    if cfg[C_MODE] == MODE_TIME:
        return origin + k * cfg[C_STRIDE]
    n = cfg[C_NBINS]
    span = cfg[C_SPAN]
    q = k // n
    r = k - q * n
    return origin + q * span + (r * span + n - 1) // n


@njit(cache=True, nogil=True, inline="always")
def _end(cfg: np.ndarray, origin: np.int64, k: np.int64) -> np.int64:
    if cfg[C_MODE] == MODE_TIME:
        return origin + k * cfg[C_STRIDE] + cfg[C_WINDOW]
    return _start(cfg, origin, k + 1)


@njit(cache=True, nogil=True, inline="always")
def _bin_of(cfg: np.ndarray, rel: np.int64) -> np.int64:
    span = cfg[C_SPAN]
    q = rel // span
    return q * cfg[C_NBINS] + ((rel - q * span) * cfg[C_NBINS]) // span


@njit(cache=True, nogil=True, inline="always")
def _first_window(cfg: np.ndarray, origin: np.int64, t: np.int64) -> np.int64:
    """Smallest window index whose end is after t."""
    rel = t - origin
    if cfg[C_MODE] == MODE_TIME:
        return max((rel - cfg[C_WINDOW]) // cfg[C_STRIDE] + 1, 0)
    return _bin_of(cfg, rel)


@njit(cache=True, nogil=True, inline="always")
def _last_window(cfg: np.ndarray, origin: np.int64, t: np.int64) -> np.int64:
    """Largest window index that starts at or before t."""
    rel = t - origin
    if cfg[C_MODE] == MODE_TIME:
        return rel // cfg[C_STRIDE]
    return _bin_of(cfg, rel)


@njit(cache=True, nogil=True, inline="always")
def _offset(lut: np.ndarray, e: Any) -> np.uint64:
    """Where event e counts in a frame, from `_lookup_table`: below the frame size when it counts,
    in [_CROPPED, _LUT_LIMIT) when it is outside the ROI, and (one entry is then -2**40: the sum
    is negative, a huge unsigned number) at least _LUT_LIMIT when it is outside the sensor or the
    polarities, so a single comparison tells the events the hot loop takes."""
    return np.uint64(
        lut[np.uint64(e.x)] + lut[np.uint64(e.y) + _LUT_ROWS] + lut[np.uint64(e.p) + _LUT_POLS]
    )


@njit(cache=True, nogil=True)
def _count_run(
    events: np.ndarray,
    i: int,
    i_end: int,
    t_lo: np.int64,
    t_span: np.uint64,
    lut: np.ndarray,
    frame: np.ndarray,
    cap: np.int64,
) -> tuple[int, np.int64, np.int64]:
    """The saturating hot loop: count unfiltered events into one window's frame while they fall
    in [t_lo, t_lo + t_span), up to index i_end; events outside the ROI are counted as cropped.
    Stops, without consuming it, at the first event that needs the general path (outside the
    segment or the sensor). Returns (where it stopped, clipped, cropped).
    """
    clipped = np.int64(0)
    cropped = np.int64(0)
    size = np.uint64(frame.shape[0])
    for k in range(i, i_end):
        e = events[np.uint64(k)]  # unsigned indices: no negative-index wraparound code
        j = _offset(lut, e)
        # One branch for both exits: this form runs about 1.6x faster than two separate tests.
        if (np.uint64(e.t - t_lo) >= t_span) | (j >= _LUT_LIMIT):
            return k, clipped, cropped
        if j >= size:
            cropped += 1
            continue
        c = frame[j]
        if c < cap:
            frame[j] = c + 1
        else:
            clipped += 1
    return i_end, clipped, cropped


@njit(cache=True, nogil=True)
def _count_run_unclipped(
    events: np.ndarray,
    i: int,
    i_end: int,
    t_lo: np.int64,
    t_span: np.uint64,
    lut: np.ndarray,
    frame: np.ndarray,
) -> int:
    """`_count_run` for a run in which no count can reach the cap (the caller proves it), so
    without the saturation test: about 1.3x faster. Returns where it stopped (at an event outside
    the segment, the sensor, or the ROI: `_skip_cropped` takes those).

    The hot loop, kept tiny on purpose: with few live values everything stays in registers. (A
    crop test inside it, or a clamp of cropped events into a trash cell, made it slower.) Four
    events at a time share one exit test (about 1.1x faster); the loop after it stops exactly."""
    size = np.uint64(frame.shape[0])
    while i + 4 <= i_end:
        e0 = events[np.uint64(i)]
        e1 = events[np.uint64(i + 1)]
        e2 = events[np.uint64(i + 2)]
        e3 = events[np.uint64(i + 3)]
        j0, j1, j2, j3 = _offset(lut, e0), _offset(lut, e1), _offset(lut, e2), _offset(lut, e3)
        if (
            (np.uint64(e0.t - t_lo) >= t_span)
            | (np.uint64(e1.t - t_lo) >= t_span)
            | (np.uint64(e2.t - t_lo) >= t_span)
            | (np.uint64(e3.t - t_lo) >= t_span)
            | (max(max(j0, j1), max(j2, j3)) >= size)
        ):
            break
        frame[j0] += 1
        frame[j1] += 1
        frame[j2] += 1
        frame[j3] += 1
        i += 4
    for k in range(i, i_end):
        e = events[np.uint64(k)]
        j = _offset(lut, e)
        if (np.uint64(e.t - t_lo) >= t_span) | (j >= size):
            return k
        frame[j] += 1
    return i_end


@njit(cache=True, nogil=True)
def _skip_cropped(
    events: np.ndarray,
    i: int,
    i_end: int,
    t_lo: np.int64,
    t_span: np.uint64,
    lut: np.ndarray,
    size: np.uint64,
) -> int:
    """Where the events from i on that are in the segment but outside the ROI end."""
    for k in range(i, i_end):
        e = events[np.uint64(k)]
        j = _offset(lut, e)
        if (np.uint64(e.t - t_lo) >= t_span) | (j < size) | (j >= _LUT_LIMIT):
            return k
    return i_end


@njit(cache=True, nogil=True)
def _count_window(
    events: np.ndarray,
    i: int,
    i_end: int,
    room: np.int64,
    t_lo: np.int64,
    t_span: np.uint64,
    lut: np.ndarray,
    frame: np.ndarray,
    cap: np.int64,
) -> tuple[int, np.int64, np.int64]:
    """Count the unfiltered events from i on that fall in [t_lo, t_lo + t_span) into one
    window's frame, up to i_end; events outside the ROI are counted as cropped. The first `room`
    take the loop without the saturation test (the caller proves no count can reach the cap
    before), the rest the saturating one. Returns (where it stopped, clipped, cropped)."""
    size = np.uint64(frame.shape[0])
    cropped = np.int64(0)
    clipped = np.int64(0)
    stop = min(i_end, i + max(room, 0))
    while stop > i:
        i = _count_run_unclipped(events, i, stop, t_lo, t_span, lut, frame)
        skipped = i
        i = _skip_cropped(events, i, stop, t_lo, t_span, lut, size)
        if i == skipped:
            break
        cropped += i - skipped
    if i == stop and stop < i_end:
        i, clipped, more = _count_run(events, i, i_end, t_lo, t_span, lut, frame, cap)
        cropped += more
    return i, clipped, cropped


@njit(cache=True, nogil=True)
def _filtered_run(
    events: np.ndarray,
    i: int,
    i_end: int,
    budget: np.int64,
    t_lo: np.int64,
    t_span: np.uint64,
    cfg: np.ndarray,
    cnt: np.ndarray,
    pol_lut: np.ndarray,
    row_lut: np.ndarray,
    col_lut: np.ndarray,
    hot: np.ndarray,
    refractory_memory: np.ndarray,
    denoise_memory: np.ndarray,
    frame: np.ndarray,
    cap: np.int64,
) -> tuple[int, np.int64, np.int64, np.int64, np.int64]:
    """`_count_run` with the filters applied: returns (i, counted, clipped, t_first, t_last).
    Events outside the sensor are counted here too, as the general path would."""
    width = cfg[C_WIDTH]
    height = cfg[C_HEIGHT]
    refractory_us = cfg[C_REFRACTORY_US]
    filter_us = cfg[C_FILTER_US]
    counted = np.int64(0)
    clipped = np.int64(0)
    t_first = np.int64(0)
    t_last = np.int64(0)
    size = frame.shape[0]
    while i < i_end and counted < budget:
        e = events[i]
        t = e.t
        if np.uint64(t - t_lo) >= t_span:
            break
        x = np.int64(e.x)
        y = np.int64(e.y)
        pol = pol_lut[e.p]
        i += 1
        if x >= width or y >= height or pol < 0:
            cnt[K_OUTSIDE] += 1
            continue
        outcome = _filter_event(
            t,
            x,
            y,
            width,
            hot,
            refractory_us,
            refractory_memory,
            filter_us,
            denoise_memory,
        )
        if outcome != 0:
            cnt[outcome] += 1
            continue
        j = pol + row_lut[y] + col_lut[x]
        if j >= size:
            cnt[K_ROI] += 1
            continue
        c = frame[j]
        if c < cap:
            frame[j] = c + 1
        else:
            clipped += 1
        if counted == 0:
            t_first = t
        t_last = t
        counted += 1
    return i, counted, clipped, t_first, t_last


@njit(cache=True, nogil=True)
def _flush_segment(
    st: np.ndarray,
    ring: np.int64,
    slot_n: np.ndarray,
    slot_tfirst: np.ndarray,
    slot_tlast: np.ndarray,
) -> None:
    """Move the current segment's tallies (event count, first/last t) to its windows' slots."""
    count = st[S_SEG_COUNT]
    if st[S_SEG_VALID] == 0 or count == 0:
        return
    s = st[S_SEG_SLOT]
    for _ in range(st[S_SEG_N]):
        if slot_n[s] == 0:
            slot_tfirst[s] = st[S_SEG_TFIRST]
        slot_n[s] += count
        slot_tlast[s] = st[S_SEG_TLAST]
        s = s + 1 if s + 1 < ring else 0
    st[S_SEG_COUNT] = 0


@njit(cache=True, nogil=True)
def _tally(st: np.ndarray, counted: np.int64, t_first: np.int64, t_last: np.int64) -> None:
    if counted == 0:
        return
    if st[S_SEG_COUNT] == 0:
        st[S_SEG_TFIRST] = t_first
    st[S_SEG_COUNT] += counted
    st[S_SEG_TLAST] = t_last


@njit(cache=True, nogil=True)
def _counted_ends(
    events: np.ndarray, i: int, i_end: int, lut: np.ndarray, size: np.uint64
) -> tuple[np.int64, np.int64]:
    """t of the first and the last event of events[i:i_end] that counted in a frame (there is
    one): a run that cropped events, whose ends may be cropped ones."""
    first = i
    while _offset(lut, events[first]) >= size:
        first += 1
    last = i_end - 1
    while _offset(lut, events[last]) >= size:
        last -= 1
    return events[first].t, events[last].t


@njit(cache=True, nogil=True)
def _run_segment(
    events: np.ndarray,
    i: int,
    cfg: np.ndarray,
    st: np.ndarray,
    cnt: np.ndarray,
    pol_lut: np.ndarray,
    row_lut: np.ndarray,
    col_lut: np.ndarray,
    filters: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
    acc: np.ndarray,
    slot_n: np.ndarray,
    lut: np.ndarray,
) -> int:
    """Count the events that continue the current single-window segment (the common case).

    Drops that touch no window bookkeeping are counted on the way without leaving: events outside
    the ROI by `_skip_cropped` wherever the hot loop stops at them (and inside the saturating and
    the filtered loops), events outside the sensor and late ones where a run stops at them. So
    only an event that needs another segment (or a resync) returns to the general path.

    `filters` is None when no filter is on: Numba then compiles this without the filtered loop,
    which keeps the unfiltered hot loop about 1.7x faster. No count of the slot exceeds the
    number of events counted into it so far, so the next C_ROOM - that many events take the loop
    without the saturation test: C_ROOM is the cap (nothing can saturate), or, when the builder
    defers saturation to `take_counts`, the largest count its accumulators hold.
    """
    n = events.shape[0]
    plane = cfg[C_PLANE]
    slot = st[S_SEG_SLOT]
    base = slot * plane
    frame = acc[base : base + plane]
    count_mode = cfg[C_MODE] == MODE_COUNT
    if count_mode:
        t_lo, t_span = -T_LIMIT, np.uint64(2 * T_LIMIT + 1)
    else:
        t_lo, t_span = st[S_SEG_LO], np.uint64(st[S_SEG_HI] - st[S_SEG_LO])
    max_gap = cfg[C_MAX_GAP]
    while i < n:
        budget = st[S_SEG_HI] - st[S_ACCEPTED] if count_mode else n
        if budget <= 0:
            break
        start = i
        i_end = min(n, i + budget)
        if filters is None:
            room = cfg[C_ROOM] - slot_n[slot] - st[S_SEG_COUNT]
            i, clipped, cropped = _count_window(
                events, i, i_end, room, t_lo, t_span, lut, frame, cfg[C_CAP]
            )
            counted = i - start - cropped
            if counted != 0:
                if cropped == 0:
                    t_first, t_last = events[start].t, events[i - 1].t
                else:
                    t_first, t_last = _counted_ends(events, start, i, lut, np.uint64(plane))
                _tally(st, counted, t_first, t_last)
            cnt[K_ROI] += cropped
        else:
            hot, refractory_memory, denoise_memory = filters
            i, counted, clipped, t_first, t_last = _filtered_run(
                events,
                i,
                n,
                budget,
                t_lo,
                t_span,
                cfg,
                cnt,
                pol_lut,
                row_lut,
                col_lut,
                hot,
                refractory_memory,
                denoise_memory,
                frame,
                cfg[C_CAP],
            )
            i_end = n
            _tally(st, counted, t_first, t_last)
        cnt[K_CLIPPED] += clipped
        if count_mode and counted != 0:
            st[S_ACCEPTED] += counted
            if st[S_ACCEPTED] >= st[S_SEG_HI]:  # the oldest window(s) just got their last event
                st[S_K_CLOSE] = max(
                    st[S_K_CLOSE], (st[S_ACCEPTED] - cfg[C_WINDOW]) // cfg[C_STRIDE] + 1
                )
                break
        if i >= i_end:  # the chunk's end, or a count budget spent partly on cropped events
            continue
        # The event that stopped the run: one `_step` would only count as outside or late?
        e = events[i]
        t = e.t
        if outside_sensor(e, cfg[C_WIDTH], cfg[C_HEIGHT]):
            cnt[K_OUTSIDE] += 1
            i += 1
            continue
        if count_mode:
            break
        floor = st[S_FLOOR]
        if t >= floor or (max_gap > 0 and (t > st[S_CLOCK] + max_gap or t < floor - max_gap)):
            break
        cnt[K_LATE] += 1
        i += 1
    return i


@njit(cache=True, nogil=True)
def _step(
    events: np.ndarray,
    i: int,
    cfg: np.ndarray,
    st: np.ndarray,
    cnt: np.ndarray,
    pol_lut: np.ndarray,
    row_lut: np.ndarray,
    col_lut: np.ndarray,
    filters: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
    acc: np.ndarray,
    slot_n: np.ndarray,
    slot_tfirst: np.ndarray,
    slot_tlast: np.ndarray,
) -> int:
    """The general path for one event: validation, lateness, gaps, window bookkeeping, filters.

    Returns the next index: i + 1 when the event was consumed, i when the caller must first drain
    completed windows (st[S_STATUS] = RUN_DRAIN) or resync (RUN_GAP).
    """
    width = cfg[C_WIDTH]
    height = cfg[C_HEIGHT]
    mode = cfg[C_MODE]
    stride = cfg[C_STRIDE]
    count = cfg[C_WINDOW]
    ring = cfg[C_RING]
    max_gap = cfg[C_MAX_GAP]
    e = events[i]
    t = e.t
    x = np.int64(e.x)
    y = np.int64(e.y)
    p = np.int64(e.p)
    if outside_sensor(e, width, height):
        cnt[K_OUTSIDE] += 1
        return i + 1

    # -- which windows does this event belong to?
    if mode == MODE_COUNT:
        accepted = st[S_ACCEPTED]
        inside = st[S_SEG_VALID] != 0 and accepted < st[S_SEG_HI]
        if not inside:
            k_lo = max(st[S_K_CLOSE], (accepted - count) // stride + 1)
            k_hi = accepted // stride
            if k_hi >= st[S_K_EMIT] + ring:
                st[S_STATUS] = RUN_DRAIN
                return i
            _flush_segment(st, ring, slot_n, slot_tfirst, slot_tlast)
            st[S_SEG_LO] = accepted
            st[S_SEG_HI] = min((k_hi + 1) * stride, k_lo * stride + count)
            st[S_SEG_K] = k_lo
            st[S_SEG_N] = k_hi - k_lo + 1
    else:
        if st[S_HAVE_ORIGIN] == 0:
            st[S_HAVE_ORIGIN] = 1
            st[S_ORIGIN] = st[S_CLOCK] = st[S_FLOOR] = t
            st[S_NEXT_END] = _end(cfg, t, st[S_K_CLOSE])
        origin = st[S_ORIGIN]
        inside = st[S_SEG_VALID] != 0 and st[S_SEG_LO] <= t and t < st[S_SEG_HI]
        if not inside:
            floor = st[S_FLOOR]
            if max_gap > 0 and (t > st[S_CLOCK] + max_gap or t < floor - max_gap):
                st[S_STATUS] = RUN_GAP
                return i
            if t < floor:
                cnt[K_LATE] += 1
                return i + 1
            st[S_CLOCK] = max(st[S_CLOCK], t)
            if st[S_CLOCK] >= st[S_NEXT_END]:  # windows completed by the advancing clock
                target = _first_window(cfg, origin, st[S_CLOCK])
                k_close = min(target, st[S_K_EMIT] + ring)
                st[S_K_CLOSE] = k_close
                st[S_FLOOR] = max(floor, _end(cfg, origin, k_close - 1))
                st[S_NEXT_END] = _end(cfg, origin, k_close)
                if k_close < target:
                    st[S_STATUS] = RUN_DRAIN
                    return i
            k_lo = max(_first_window(cfg, origin, t), st[S_K_CLOSE])
            k_hi = _last_window(cfg, origin, t)
            if k_hi >= st[S_K_EMIT] + ring:
                st[S_STATUS] = RUN_DRAIN
                return i
            _flush_segment(st, ring, slot_n, slot_tfirst, slot_tlast)
            seg_lo = _start(cfg, origin, k_hi)
            if k_lo > st[S_K_CLOSE]:
                seg_lo = max(seg_lo, _end(cfg, origin, k_lo - 1))
            else:
                seg_lo = max(seg_lo, st[S_FLOOR])
            st[S_SEG_LO] = seg_lo
            st[S_SEG_HI] = min(_start(cfg, origin, k_hi + 1), _end(cfg, origin, k_lo))
            st[S_SEG_K] = k_lo
            st[S_SEG_N] = k_hi - k_lo + 1
    if not inside:
        st[S_SEG_VALID] = 1
        st[S_SEG_SLOT] = st[S_SEG_K] % ring

    # -- filters and geometry (the event is consumed from here on)
    if filters is not None:
        hot, refractory_memory, denoise_memory = filters
        outcome = _filter_event(
            t,
            x,
            y,
            width,
            hot,
            cfg[C_REFRACTORY_US],
            refractory_memory,
            cfg[C_FILTER_US],
            denoise_memory,
        )
        if outcome != 0:
            cnt[outcome] += 1
            return i + 1
    plane = cfg[C_PLANE]
    j = pol_lut[p] + row_lut[y] + col_lut[x]
    if j >= plane:
        cnt[K_ROI] += 1
        return i + 1
    cap = cfg[C_CAP]
    s = st[S_SEG_SLOT]
    for _ in range(st[S_SEG_N]):
        base = s * plane + j
        c = acc[base]
        if c < cap:
            acc[base] = c + 1
        else:
            cnt[K_CLIPPED] += 1
        s = s + 1 if s + 1 < ring else 0
    _tally(st, 1, t, t)
    if mode == MODE_COUNT:
        st[S_ACCEPTED] += 1
        if st[S_ACCEPTED] >= st[S_SEG_HI]:
            st[S_K_CLOSE] = max(st[S_K_CLOSE], (st[S_ACCEPTED] - count) // stride + 1)
    return i + 1


@njit(cache=True, nogil=True)
def _general(
    events: np.ndarray,
    i: int,
    cfg: np.ndarray,
    st: np.ndarray,
    cnt: np.ndarray,
    pol_lut: np.ndarray,
    row_lut: np.ndarray,
    col_lut: np.ndarray,
    filters: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
    acc: np.ndarray,
    slot_n: np.ndarray,
    slot_tfirst: np.ndarray,
    slot_tlast: np.ndarray,
) -> int:
    """Events through `_step` until the next one can take the fast path (a single-window
    segment), the chunk ends, or the ring must be drained / a resync is due (st[S_STATUS])."""
    n = events.shape[0]
    while i < n:
        i = _step(
            events,
            i,
            cfg,
            st,
            cnt,
            pol_lut,
            row_lut,
            col_lut,
            filters,
            acc,
            slot_n,
            slot_tfirst,
            slot_tlast,
        )
        if st[S_STATUS] != RUN_DONE or (st[S_SEG_VALID] != 0 and st[S_SEG_N] == 1):
            break
    return i


@njit(cache=True, nogil=True)
def _bin_chunk(
    events: np.ndarray,
    i: int,
    cfg: np.ndarray,
    st: np.ndarray,
    cnt: np.ndarray,
    pol_lut: np.ndarray,
    row_lut: np.ndarray,
    col_lut: np.ndarray,
    filters: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
    acc: np.ndarray,
    slot_n: np.ndarray,
    slot_tfirst: np.ndarray,
    slot_tlast: np.ndarray,
    lut: np.ndarray,
) -> int:
    """`FrameBuilder._bin` in one compiled call (a Python loop here cost ~20 µs per short
    recording, in argument checks of the calls it makes)."""
    n = events.shape[0]
    st[S_STATUS] = RUN_DONE
    while i < n:
        if st[S_SEG_VALID] != 0 and st[S_SEG_N] == 1:
            i = _run_segment(
                events,
                i,
                cfg,
                st,
                cnt,
                pol_lut,
                row_lut,
                col_lut,
                filters,
                acc,
                slot_n,
                lut,
            )
            if i >= n:
                break
        i = _general(
            events,
            i,
            cfg,
            st,
            cnt,
            pol_lut,
            row_lut,
            col_lut,
            filters,
            acc,
            slot_n,
            slot_tfirst,
            slot_tlast,
        )
        if st[S_STATUS] != RUN_DONE:
            break
    _flush_segment(st, cfg[C_RING], slot_n, slot_tfirst, slot_tlast)
    return i


@njit(cache=True, nogil=True)
def _window_bounds(cfg: np.ndarray, origin: np.int64, k: np.int64) -> tuple[np.int64, np.int64]:
    return _start(cfg, origin, k), _end(cfg, origin, k)


@njit(cache=True, nogil=True)
def _windows_until(cfg: np.ndarray, origin: np.int64, t: np.int64) -> tuple[np.int64, np.int64]:
    """(first window whose end is after t, last window started at or before t)."""
    return _first_window(cfg, origin, t), _last_window(cfg, origin, t)


@njit(cache=True, nogil=True)
def _move_counts(counts: np.ndarray, out: np.ndarray) -> None:
    """out[:] = counts (converting), and zero counts: one pass instead of a cast plus a memset."""
    for j in range(counts.shape[0]):
        out[j] = counts[j]
        counts[j] = 0


@njit(cache=True, nogil=True)
def _move_saturated(
    counts: np.ndarray, out: np.ndarray, cap: np.int64, total: np.int64
) -> np.int64:
    """`_move_counts` for deferred saturation (int32 counts): out[:] = min(counts, cap); returns
    the increments beyond the cap (what the saturation test would have counted as clipped).

    `total`, the events counted into the frame, bounds every count and their sum: at most the cap,
    nothing can saturate (a plain move); otherwise the move notes the largest count and only if it
    is over the cap does a second, saturating pass follow.
    """
    if total <= cap:
        _move_counts(counts, out)
        return np.int64(0)
    top = np.int32(0)
    for j in range(counts.shape[0]):
        c = counts[j]
        top = max(top, c)
        out[j] = c
    if top <= cap:
        counts[:] = 0
        return np.int64(0)
    cap32 = np.int32(cap)
    if total <= np.iinfo(np.uint32).max:  # the excess fits 32 bits: a vectorisable sum
        excess32 = np.uint32(0)
        for j in range(counts.shape[0]):
            c = counts[j]
            m = min(c, cap32)
            excess32 += np.uint32(c - m)
            out[j] = m
            counts[j] = 0
        return np.int64(excess32)
    excess = np.int64(0)
    for j in range(counts.shape[0]):
        c = counts[j]
        m = min(c, cap32)
        excess += c - m
        out[j] = m
        counts[j] = 0
    return np.int64(excess)


@njit(cache=True, nogil=True)
def _clear_saturated(counts: np.ndarray, cap: np.int64) -> np.int64:
    """Zero a count frame nobody takes (deferred saturation); returns its increments beyond cap."""
    excess = np.int64(0)
    for j in range(counts.shape[0]):
        excess += max(np.int64(counts[j]) - cap, 0)
        counts[j] = 0
    return excess


@njit(cache=True, nogil=True)
def _store_closed(
    cfg: np.ndarray,
    st: np.ndarray,
    cnt: np.ndarray,
    acc: np.ndarray,
    slot_n: np.ndarray,
    slot_tfirst: np.ndarray,
    slot_tlast: np.ndarray,
    frames: np.ndarray,
    meta: np.ndarray,
    tally: np.ndarray,
    limit: np.int64,
    partial: bool,
) -> np.int64:
    """`_Recording._drain` in one call: completed windows k (k < limit, or all when limit is
    negative) go to frames[k] (saturated) and meta[k] = (t_start, t_end, n_events, partial);
    tally = (events of windows beyond limit, windows stored up to). Returns -1 when done, or the
    first window that does not fit in `frames` (nothing moved for it)."""
    ring = cfg[C_RING]
    plane = cfg[C_PLANE]
    cap = cfg[C_CAP]
    origin = st[S_ORIGIN]
    for k in range(st[S_K_EMIT], st[S_K_CLOSE]):
        slot = k % ring
        counts = acc[slot * plane : (slot + 1) * plane]
        if 0 <= limit <= k:
            tally[0] += slot_n[slot]
            cnt[K_CLIPPED] += _clear_saturated(counts, cap)
        else:
            if k >= frames.shape[0]:
                return k
            if cfg[C_MODE] == MODE_COUNT:
                t_start, t_end = slot_tfirst[slot], slot_tlast[slot] + 1
            else:
                t_start, t_end = _start(cfg, origin, k), _end(cfg, origin, k)
            meta[k, 0] = t_start
            meta[k, 1] = t_end
            meta[k, 2] = slot_n[slot]
            meta[k, 3] = partial
            cnt[K_CLIPPED] += _move_saturated(counts, frames[k], cap, slot_n[slot])
            tally[1] = max(tally[1], k + 1)
        slot_n[slot] = 0
        st[S_K_EMIT] = k + 1
    return -1


# --- the builder ---------------------------------------------------------------------------------


#: float32 holds every count up to here exactly (and no more: beyond, increments are lost).
_FLOAT32_MAX_COUNT = 2**24


def _effective_cap(spec: WindowSpec) -> int:
    dtype = np.dtype(spec.dtype)
    if dtype.kind == "f":
        dtype_max = {2: 65504, 4: _FLOAT32_MAX_COUNT}.get(dtype.itemsize, _INT32_MAX)
    else:
        dtype_max = min(int(np.iinfo(dtype).max), _INT32_MAX)
    return min(spec.clip or _INT32_MAX, dtype_max)


def _open_windows(spec: WindowSpec) -> int:
    """How many windows an event can belong to at once."""
    if spec.kind == "time":
        return -(-spec.window_us // (spec.stride_us or spec.window_us))
    if spec.kind == "count":
        return -(-spec.event_count // (spec.stride_events or spec.event_count))
    return 1


def _fill_config(
    cfg: np.ndarray, spec: WindowSpec, width: int, height: int, span_us: int | None
) -> None:
    """The kernels' read-only parameters (all but the ring's: C_RING, C_ROOM)."""
    if spec.kind == "time":
        mode, window, stride = MODE_TIME, spec.window_us, spec.stride_us or spec.window_us
    elif spec.kind == "count":
        mode, window = MODE_COUNT, spec.event_count
        stride = spec.stride_events or spec.event_count
    else:
        mode, window, stride = MODE_BINS, 0, 1
    n_pol, h_out, w_out = spec._shape(width, height)
    cfg[C_WIDTH], cfg[C_HEIGHT], cfg[C_MODE] = width, height, mode
    cfg[C_WINDOW], cfg[C_STRIDE] = window, stride
    cfg[C_SPAN], cfg[C_NBINS] = span_us or 1, spec.n_bins or 1
    cfg[C_PLANE] = n_pol * h_out * w_out
    cfg[C_REFRACTORY_US] = spec.refractory_us or 0
    cfg[C_FILTER_US] = spec.filter_us or 0
    cfg[C_CAP] = _effective_cap(spec)
    cfg[C_MAX_GAP] = spec.max_gap_us or 0


def _carve(sizes: tuple[int, ...]) -> list[np.ndarray]:
    """Zeroed int64 arrays of these sizes, cut from one allocation."""
    block = np.zeros(sum(sizes), dtype=np.int64)
    ends = list(itertools.accumulate(sizes))
    return [block[end - size : end] for size, end in zip(sizes, ends, strict=True)]


@lru_cache(maxsize=16)
def _lookup_table(
    width: int, height: int, roi: tuple[int, int, int, int], downsample: int, n_pol: int
) -> np.ndarray:
    """Columns (x), rows (y, at offset 65536) and polarities (p, at 131072) to offsets in the flat
    frame; _OUTSIDE (negative) outside the sensor or for polarity > 1, _CROPPED for sensor
    coordinates outside the ROI. Full uint16/uint8 range, so the hot loop validates with a single
    unsigned comparison. Shared by every builder of the same geometry (1 MB, and filling it
    dominated short recordings); never written."""
    x0, y0, roi_w, roi_h = roi
    w_out, h_out = -(-roi_w // downsample), -(-roi_h // downsample)
    rows, pols = int(_LUT_ROWS), int(_LUT_POLS)
    lut = np.full(pols + 256, _OUTSIDE, dtype=np.int64)
    lut[:width] = _CROPPED
    lut[rows : rows + height] = _CROPPED
    lut[x0 : x0 + roi_w] = np.arange(roi_w) // downsample
    lut[rows + y0 : rows + y0 + roi_h] = (np.arange(roi_h) // downsample) * w_out
    lut[pols : pols + 2] = (0, h_out * w_out) if n_pol == 2 else (0, 0)
    return lut


class FrameBuilder:
    """Incremental events-to-frames for one stream; the engine behind both windowing paths.

    `push(chunk)` returns the windows that chunk completed; `advance_to(t)` closes windows that end
    at or before sensor time t (live sources' wall clock); `finish(end)` emits or drops the
    started-but-incomplete windows. Memory is fixed at construction: a ring of a few count frames
    plus per-pixel filter memories; each produced `Window` gets a fresh copy of its small frame.
    """

    #: Saturate counts when a window is taken instead of at every increment (see `_Recording`).
    _defers_saturation = False

    def __init__(self, spec: WindowSpec, sensor: StreamInfo | tuple[int, ...]) -> None:
        if not spec.streamable:
            raise ConfigError(
                "n_bins over the recording's own span needs the whole recording: set "
                "WindowSpec.span_us to stream, or use frames_for_recording"
            )
        self._setup(spec, *sensor_dims(sensor), spec.span_us)

    def _setup(self, spec: WindowSpec, width: int, height: int, span_us: int | None) -> None:
        self.spec = spec
        self.width, self.height = width, height
        self.frame_shape = spec._shape(width, height)
        n_pol, h_out, w_out = self.frame_shape
        plane = h_out * w_out
        self._lut = _lookup_table(
            self.width, self.height, spec._roi(self.width, self.height), spec.downsample, n_pol
        )
        self._col_lut = self._lut[:_LUT_ROWS]
        self._row_lut = self._lut[_LUT_ROWS:_LUT_POLS]
        self._pol_lut = self._lut[_LUT_POLS:]

        hot, self._refractory, self._denoise = filter_state(
            self.width,
            self.height,
            spec.hot_pixels,
            spec.refractory_us is not None,
            spec.filter_us is not None,
        )
        filtering = hot is not None or self._refractory is not None or self._denoise is not None
        # None (not a tuple of Nones) when no filter is on: Numba compiles the filters out.
        self._filters = (hot, self._refractory, self._denoise) if filtering else None

        self._out_dtype = np.dtype(spec.dtype)
        cap = _effective_cap(spec)
        # Counts are int32 (one compiled kernel family for every frame dtype), or float32 for
        # float32 frames streamed (see `_windows`). They saturate at every increment (C_ROOM =
        # cap: the saturation test is skipped only where no count can reach the cap), or,
        # deferring, when the window is taken: then the test is skipped until a count could
        # overflow.
        streamed_float32 = self._out_dtype == np.float32 and not self._defers_saturation
        acc_dtype = np.dtype(np.float32 if streamed_float32 else np.int32)
        # Beyond the open windows, the ring holds completed ones the kernel may run ahead with
        # (fewer returns to Python), but within _RING_SLACK_BYTES: a slot is reused `ring`
        # windows later, and big frames had better still be in cache by then. Frames over it
        # get no slack: the kernel returns at every window, and the next window counts into
        # the slot just emptied, still in cache (a 346x260 stream's 10 ms windows: 1.2x faster).
        slot_bytes = n_pol * plane * acc_dtype.itemsize
        ring = _open_windows(spec) + min(16, _RING_SLACK_BYTES // slot_bytes)
        # The small int64 arrays, carved out of one allocation (cheaper for short recordings).
        cfg, self._st, self._cnt, self._reported, *slots = _carve(
            (N_CFG, N_ST, N_CNT, N_CNT, ring, ring, ring)
        )
        self._slot_n, self._slot_tfirst, self._slot_tlast = slots
        _fill_config(cfg, spec, width, height, span_us)
        cfg[C_RING] = ring
        self._cfg = cfg
        self._ring = ring
        cfg[C_ROOM] = _INT32_MAX if self._defers_saturation else cap
        self._acc = np.zeros(ring * n_pol * plane, dtype=acc_dtype)
        self._slots = (self._slot_n, self._slot_tfirst, self._slot_tlast)
        self._zeroed = np.zeros(ring, dtype=bool)  # slot already emptied by take_counts
        # A ring of one slot in the frames' dtype is handed out as the window's frames, and a
        # zeroed one takes its place: no move of the counts, no clearing of the slot.
        self._hands_out_slot = ring == 1 and acc_dtype == self._out_dtype
        self._finished = False  # everything above starts as reset() leaves it

    # -- public API --

    @property
    def totals(self) -> Drops:
        """Cumulative drops since construction or `reset()`."""
        return _drops_from(self._cnt)

    @property
    def has_origin(self) -> bool:
        return bool(self._st[S_HAVE_ORIGIN])

    @property
    def clock_us(self) -> int | None:
        """Newest sensor time seen (or advanced to); None before the first valid event."""
        return int(self._st[S_CLOCK]) if self._st[S_HAVE_ORIGIN] else None

    @property
    def next_close_us(self) -> int | None:
        """Sensor time at which the oldest open window ends (time and bins modes)."""
        if self.spec.kind == "count" or not self._st[S_HAVE_ORIGIN]:
            return None
        return int(self._st[S_NEXT_END])

    def fits(self, spec: WindowSpec, sensor: StreamInfo | tuple[int, ...]) -> bool:
        """Whether this builder bins `spec` for that sensor: then, after `reset()`, it is as good
        as a new one (a stream's files one after another can share it)."""
        return spec == self.spec and sensor_dims(sensor) == (self.width, self.height)

    def reset(self) -> None:
        """Start a new, unrelated stream: forget windows, origin, filter memories and counters.

        Cheaper than a new builder: nothing is allocated, and of the count frames only those
        that may still hold counts are cleared (a slot with events that nobody took)."""
        for slot in np.flatnonzero((self._slot_n != 0) & ~self._zeroed):
            self._slot_view(int(slot)).fill(0)
        self._slot_n.fill(0)
        self._zeroed.fill(False)
        self._st.fill(0)
        self._cnt.fill(0)
        self._reported.fill(0)
        for memory in (self._refractory, self._denoise):
            if memory is not None:
                memory.fill(NEVER)
        self._finished = False

    def push(self, events: np.ndarray) -> list[Window]:
        """Feed one chunk; return the windows it completed, oldest first.

        Eager: a chunk that jumps far ahead in time (up to `max_gap_us`) completes every empty
        window in between at once. The asyncio stage uses the lazy `push_iter` instead.
        """
        return list(self.push_iter(events))

    def push_iter(self, events: np.ndarray) -> Iterator[Window]:
        """Lazy `push`: windows are produced one by one as the consumer asks, so memory stays at
        the fixed ring whatever the chunk holds. Consume it fully before the next call."""
        return self._windows(self._feed(events), wall_clock=False)

    def advance_to(self, t_us: int, *, wall_clock: bool = False) -> list[Window]:
        """Close every window that ends at or before sensor time `t_us` (time and bins modes).

        Used by the live stage when the wall clock says the sensor has moved on although no event
        arrived, and by `frames_for_recording` to complete a fixed span. Events older than the
        newest closed window are late from then on.
        """
        return list(self.advance_iter(t_us, wall_clock=wall_clock))

    def advance_iter(self, t_us: int, *, wall_clock: bool = False) -> Iterator[Window]:
        return self._windows(self._advance(int(t_us)), wall_clock=wall_clock)

    def finish(self, end: str = "emit") -> list[Window]:
        """End of stream: emit (`end="emit"`) or drop (`"drop"`) the started, incomplete windows.

        The builder then refuses events until `reset()`.
        """
        return list(self.finish_iter(end))

    def finish_iter(self, end: str = "emit") -> Iterator[Window]:
        if end not in END_OPTIONS:
            raise ConfigError(f"end must be one of {END_OPTIONS}, got {end!r}")
        return self._windows(self._finish(end), wall_clock=False)

    def take_drops(self) -> Drops:
        """Drops since the previous call (stream-order attribution to the next window)."""
        if self._cnt.tobytes() == self._reported.tobytes():
            return _NO_DROPS
        delta = self._cnt - self._reported
        self._reported[:] = self._cnt
        return _drops_from(delta)

    def slot_counts(self, slot: int) -> np.ndarray:
        """Count frame of a ring slot as a [P, H', W'] view; valid until the engine resumes."""
        return self._slot_view(slot).reshape(self.frame_shape)

    # -- engine, shared by the Window path and frames_for_recording. Each generator yields one
    # _Closed per completed window while its counts are still in the ring; the slot is cleared
    # when the consumer asks for the next one.

    def take_counts(self, slot: int, out: np.ndarray) -> None:
        """Move a completed window's counts into `out` (any frame dtype, same size), leaving the
        slot zeroed: the cheap way to consume a `_Closed`."""
        counts = self._slot_view(slot)
        if out.dtype == np.float16:  # Numba has no float16
            np.copyto(out.reshape(-1), counts, casting="unsafe")
            counts.fill(0)
        else:
            _move_counts(counts, out.reshape(-1))
        self._zeroed[slot] = True

    def _windows(self, closed: Iterator[_Closed], *, wall_clock: bool) -> Iterator[Window]:
        for c in closed:
            if self._hands_out_slot:
                frames = self._acc.reshape(self.frame_shape)
                self._acc = np.zeros_like(self._acc)
                self._zeroed[c.slot] = True
            else:
                frames = np.empty(self.frame_shape, dtype=self._out_dtype)
                self.take_counts(c.slot, frames)
            yield Window(
                index=c.index,
                frames=frames,
                t_start_us=c.t_start_us,
                t_end_us=c.t_end_us,
                n_events=c.n_events,
                closed_at=time.perf_counter(),
                partial=c.partial,
                closed_by_wall_clock=wall_clock and not c.partial,
                drops=self.take_drops(),
            )

    def _feed(self, events: np.ndarray) -> Iterator[_Closed]:
        if self._finished:
            raise ConfigError("FrameBuilder.finish() was called; reset() before feeding events")
        events = np.ascontiguousarray(as_events(events))
        i = 0
        st = self._st
        while i < events.shape[0]:
            i = self._bin(events, i)
            status = st[S_STATUS]
            yield from self._drain(partial=False)
            if status == RUN_GAP:
                yield from self._resync(int(events["t"][i]))

    def _bin(self, events: np.ndarray, i: int) -> int:
        """Count events[i:] into the ring until the chunk ends or the ring must be drained.

        Every event goes either through the tight `_run_segment` (it continues a single-window
        segment) or through `_general`; which one depends only on the stream, never on chunking.
        They are separate compiled functions on purpose: written as one, the hot loop runs about
        1.7x slower. Sets st[S_STATUS] (RUN_DONE, RUN_DRAIN or RUN_GAP).
        """
        return _bin_chunk(
            events,
            i,
            self._cfg,
            self._st,
            self._cnt,
            self._pol_lut,
            self._row_lut,
            self._col_lut,
            self._filters,
            self._acc,
            *self._slots,
            self._lut,
        )

    def _advance(self, t_us: int) -> Iterator[_Closed]:
        st = self._st
        if self._finished or self.spec.kind == "count" or not st[S_HAVE_ORIGIN]:
            return
        st[S_CLOCK] = max(int(st[S_CLOCK]), t_us)
        target, _ = _windows_until(self._cfg, st[S_ORIGIN], st[S_CLOCK])
        yield from self._close_until(int(target), partial=False)

    def _finish(self, end: str) -> Iterator[_Closed]:
        if self._finished:
            return
        self._finished = True
        last = self._last_started()
        if last is None:
            return
        if end == "emit":
            yield from self._close_until(last + 1, partial=True)
        else:
            st = self._st
            for k in range(int(st[S_K_EMIT]), last + 1):
                self._cnt[K_END] += self._slot_n[k % self._ring]
                self._clear_slot(k % self._ring)
            st[S_K_EMIT] = st[S_K_CLOSE] = last + 1

    def _last_started(self) -> int | None:
        st = self._st
        if self.spec.kind == "count":
            accepted = int(st[S_ACCEPTED])
            return None if accepted == 0 else (accepted - 1) // int(self._cfg[C_STRIDE])
        if not st[S_HAVE_ORIGIN]:
            return None
        _, last = _windows_until(self._cfg, st[S_ORIGIN], st[S_CLOCK])
        return int(last)

    def _close_until(self, target: int, *, partial: bool) -> Iterator[_Closed]:
        """Complete windows up to (excluding) `target`, in ring-sized batches."""
        st, cfg = self._st, self._cfg
        while st[S_K_CLOSE] < target:
            k_close = min(target, int(st[S_K_EMIT]) + self._ring)
            st[S_K_CLOSE] = k_close
            if self.spec.kind != "count":
                _, end = _window_bounds(cfg, st[S_ORIGIN], k_close - 1)
                st[S_FLOOR] = max(int(st[S_FLOOR]), int(end))
                _, st[S_NEXT_END] = _window_bounds(cfg, st[S_ORIGIN], k_close)
            st[S_SEG_VALID] = 0
            yield from self._drain(partial=partial)

    def _resync(self, t_us: int) -> Iterator[_Closed]:
        """A time jump beyond max_gap_us: close what is open as partial, restart windows at t_us."""
        st, cfg = self._st, self._cfg
        last = self._last_started()
        yield from self._close_until(last + 1, partial=True)
        k_new = int(st[S_K_CLOSE])
        if self.spec.kind == "bins":
            n = int(cfg[C_NBINS])
            k_new = -(-k_new // n) * n
            origin = t_us - (k_new // n) * int(cfg[C_SPAN])
        else:
            origin = t_us - k_new * int(cfg[C_STRIDE])
        st[S_ORIGIN] = origin
        st[S_K_EMIT] = st[S_K_CLOSE] = k_new
        st[S_CLOCK] = st[S_FLOOR] = t_us
        _, st[S_NEXT_END] = _window_bounds(cfg, origin, k_new)
        st[S_SEG_VALID] = 0
        self._cnt[K_RESYNC] += 1

    def _drain(self, *, partial: bool) -> Iterator[_Closed]:
        st, cfg = self._st, self._cfg
        for k in range(int(st[S_K_EMIT]), int(st[S_K_CLOSE])):
            slot = k % self._ring
            if self.spec.kind == "count":
                t_start = int(self._slot_tfirst[slot])
                t_end = int(self._slot_tlast[slot]) + 1
            else:
                start, end = _window_bounds(cfg, st[S_ORIGIN], k)
                t_start, t_end = int(start), int(end)
            yield _Closed(k, slot, t_start, t_end, int(self._slot_n[slot]), partial)
            self._clear_slot(slot)
            st[S_K_EMIT] = k + 1

    def _clear_slot(self, slot: int) -> None:
        if self._zeroed[slot]:
            pass
        elif self._defers_saturation:
            self._cnt[K_CLIPPED] += _clear_saturated(self._slot_view(slot), self._cfg[C_CAP])
        else:
            self._slot_view(slot).fill(0)
        self._zeroed[slot] = False
        self._slot_n[slot] = 0

    def _slot_view(self, slot: int) -> np.ndarray:
        plane = int(self._cfg[C_PLANE])
        return self._acc[slot * plane : (slot + 1) * plane]


class _Recording(FrameBuilder):
    """The builder of `bin_recording`: the same engine, with two differences that only
    whole-recording results can see.

    - Completed windows go straight into the output (`_store_closed`, one compiled call per
      batch) instead of one Python step each.
    - Counts saturate when a window is taken (int32 counters), so the hot loop never tests for
      saturation. That moves `clipped` increments from event time to window time; totals are
      the same, and a streaming `Window` keeps its exact stream-order attribution.

    n_bins over the recording's own span is allowed: `span_us` is that span.
    """

    _defers_saturation = True

    def __init__(
        self,
        spec: WindowSpec,
        width: int,
        height: int,
        span_us: int | None,
        store: _GrowingFrames,
    ) -> None:
        self._setup(spec, width, height, span_us)
        self._store = store
        self._limit = spec.n_bins if spec.kind == "bins" else -1

    def run(self, steps: Iterator[_Closed]) -> None:
        """Drive one of the engine's generators (they yield nothing here: see `_drain`)."""
        for _ in steps:
            raise AssertionError("_Recording stores windows itself")

    def _drain(self, *, partial: bool) -> Iterator[_Closed]:
        """Store the completed windows (from the n_bins limit on: count them as beyond the
        span), growing the output as needed."""
        store = self._store
        while True:
            k = _store_closed(
                self._cfg,
                self._st,
                self._cnt,
                self._acc,
                *self._slots,
                store.frames.reshape(store.frames.shape[0], -1),
                store.meta,
                store.tally,
                self._limit,
                partial,
            )
            if k < 0:
                return iter(())
            store.grow(int(k))


class _Closed(NamedTuple):
    index: int
    slot: int
    t_start_us: int
    t_end_us: int
    n_events: int
    partial: bool


_NO_DROPS = Drops()
_DROP_FIELDS = tuple(f.name for f in fields(Drops))


def _drops_from(cnt: np.ndarray) -> Drops:
    return Drops(
        outside_sensor=int(cnt[K_OUTSIDE]),
        hot_pixel=int(cnt[K_HOT]),
        refractory=int(cnt[K_REFRACTORY]),
        denoise=int(cnt[K_DENOISE]),
        late=int(cnt[K_LATE]),
        outside_roi=int(cnt[K_ROI]),
        clipped=int(cnt[K_CLIPPED]),
        resyncs=int(cnt[K_RESYNC]),
        end_of_stream=int(cnt[K_END]),
    )


# --- whole recordings straight into the output ---------------------------------------------------
#
# Non-overlapping time windows and n_bins without filters (the common whole-recording case) skip
# the ring: `_direct_run` counts each event into its output frame, so there is no per-window move
# and the frames are written once. It follows the engine's rules event for event (validation,
# lateness and the clock that drives it, the single-window segment, ROI, saturation, bins beyond
# the span) and gives up (`_DIRECT_*` statuses) wherever the engine would do something it does
# not: a resync, or more events in one window after a fixed n_bins span than the cap (the engine
# counts their saturation as clipped, although no frame holds them).
# `bin_recording` then falls back to the engine. Two threads can share a long recording: each
# takes the windows on its side of a window boundary; see `_bin_direct`.

# Direct-run state, in and out: the clock's window, the floor (start of that window), the clock
# (t of the event that opened that window: the engine moves its clock only when an event leaves
# the current window), whether a window is open; then, not part of the state a part hands on,
# the events after a fixed n_bins span, and the window after it being counted and its events;
# last, where `_warm`'s reads go (so that the compiler keeps them).
D_K, D_FLOOR, D_CLOCK, D_OPEN, D_BEYOND, D_BEYOND_K, D_BEYOND_N, D_SINK, N_D = range(9)
_DIRECT_OK, _DIRECT_GAP, _DIRECT_FULL, _DIRECT_CONFLICT, _DIRECT_BEYOND = range(5)


@njit(cache=True, nogil=True, inline="always")
def _warm(frame: np.ndarray) -> np.int64:
    """Read one value per cache line of a window's frame, in order, before the window's events
    scatter into it: the hardware prefetcher streams it into cache, where the scattered writes
    then hit (fresh output memory otherwise costs a miss per line: one thread, 50 ms windows of
    a 346x260 recording, 1.15x faster)."""
    step = max(64 // frame.itemsize, 1)
    total = np.int64(0)
    for q in range(0, frame.shape[0], step):
        total += np.int64(frame[q])
    return total


@njit(cache=True, nogil=True)
def _direct_run(
    events: np.ndarray,
    i: int,
    i_end: int,
    cfg: np.ndarray,
    origin: np.int64,
    lut: np.ndarray,
    frames: np.ndarray,
    counted: np.ndarray,
    d_state: np.ndarray,
    cnt: np.ndarray,
    limit: np.int64,
    k_min: np.int64,
    k_max: np.int64,
) -> int:
    """Count events[i:i_end] into frames[k] ([windows, plane]) and counted[k], from `d_state`
    on. Counts into windows outside [k_min, k_max) are refused (_DIRECT_CONFLICT, with
    _DIRECT_FULL when k_max is the output's end): another thread owns them. Returns a status;
    d_state holds where it stopped."""
    size = np.uint64(frames.shape[1])
    cap = cfg[C_CAP]
    max_gap = cfg[C_MAX_GAP]
    width, height = cfg[C_WIDTH], cfg[C_HEIGHT]
    full = _DIRECT_FULL if k_max == frames.shape[0] else _DIRECT_CONFLICT
    k, floor, clock = d_state[D_K], d_state[D_FLOOR], d_state[D_CLOCK]
    is_open = d_state[D_OPEN] != 0
    lo = _start(cfg, origin, k)
    hi = _end(cfg, origin, k)
    status = _DIRECT_OK
    while i < i_end:
        stored = limit < 0 or k < limit
        if is_open and stored and k_min <= k < k_max:
            # The run of events inside window k, as the engine's `_run_segment` takes it.
            start = i
            i, clipped, cropped = _count_window(
                events, i, i_end, cap - counted[k], lo, np.uint64(hi - lo), lut, frames[k], cap
            )
            counted[k] += i - start - cropped
            cnt[K_ROI] += cropped
            cnt[K_CLIPPED] += clipped
            if i >= i_end:
                break
        # The event at i leaves the window (or no window is open): the engine's general path.
        e = events[i]
        t = e.t
        if outside_sensor(e, width, height):
            cnt[K_OUTSIDE] += 1
            i += 1
            continue
        if not (is_open and lo <= t < hi):
            if max_gap > 0 and (t > clock + max_gap or t < floor - max_gap):
                status = _DIRECT_GAP
                break
            if t < floor:
                cnt[K_LATE] += 1
                i += 1
                continue
            clock = max(clock, t)  # a later window (t >= hi), or the first one
            k = _first_window(cfg, origin, clock)
            lo = _start(cfg, origin, k)
            hi = _end(cfg, origin, k)
            floor = max(floor, lo)
            is_open = True
            stored = limit < 0 or k < limit
            if stored and not k_min <= k < k_max:
                # Not ours, or past the output: even if nothing counts in it (all cropped), an
                # opened window is emitted, so it must be ours and have a frame.
                status = _DIRECT_CONFLICT if k < k_min else full
                break
            if stored:
                d_state[D_SINK] = _warm(frames[k])
        j = _offset(lut, e)
        if j >= size:
            cnt[K_ROI] += 1
            i += 1
            continue
        if not stored:
            if k_max != frames.shape[0]:  # only the last part counts past the span
                status = _DIRECT_CONFLICT
                break
            if d_state[D_BEYOND_K] != k:
                d_state[D_BEYOND_K], d_state[D_BEYOND_N] = k, 0
            d_state[D_BEYOND_N] += 1
            if d_state[D_BEYOND_N] > cap:  # a count there could saturate
                status = _DIRECT_BEYOND
                break
            d_state[D_BEYOND] += 1
            i += 1
            continue
        if k < k_min or k >= k_max:
            status = _DIRECT_CONFLICT if k < k_min else full
            break
        c = frames[k, j]
        if c < cap:
            frames[k, j] = c + 1
        else:
            cnt[K_CLIPPED] += 1
        counted[k] += 1
        i += 1
    d_state[D_K], d_state[D_FLOOR], d_state[D_CLOCK] = k, floor, clock
    d_state[D_OPEN] = is_open
    return status


@njit(cache=True, nogil=True)
def _search_t(events: np.ndarray, t: np.int64) -> int:
    """Index of the first event at or after t, by binary search (events in time order)."""
    lo, hi = 0, events.shape[0]
    while lo < hi:
        mid = (lo + hi) // 2
        if events[mid].t < t:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True, nogil=True)
def _first_valid(events: np.ndarray, i: int, width: int, height: int, step: int) -> int:
    """Index of the first event from i on (step 1) or back from i (step -1) that passes ingest
    validation; -1 if none."""
    n = events.shape[0]
    while 0 <= i < n:
        if not outside_sensor(events[i], width, height):
            return i
        i += step
    return -1


def _direct_fits(spec: WindowSpec) -> bool:
    """Whether `_bin_direct` can bin this spec: non-overlapping time windows or n_bins, no
    filters (their per-pixel memories belong to the engine)."""
    unfiltered = not spec.hot_pixels and spec.refractory_us is None and spec.filter_us is None
    if spec.kind == "time":
        return unfiltered and (spec.stride_us or spec.window_us) == spec.window_us
    return unfiltered and spec.kind == "bins"


#: With `threads=None`, recordings of at least this many events are split between two threads.
_PARALLEL_MIN_EVENTS = 1 << 21


def _default_threads(n_events: int) -> int:
    if n_events < _PARALLEL_MIN_EVENTS:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(2, cores or 1)


class _Part(NamedTuple):
    """Events [i, i_end) for one thread, its windows [k_min, k_max), and the state it starts
    from (what the events before i leave, if they are in time order)."""

    i: int
    i_end: int
    k_min: int
    k_max: int
    state: np.ndarray


def _plan_parts(
    events: np.ndarray, first: int, cfg: np.ndarray, origin: np.int64, n_parts: int, k_end: int
) -> list[_Part]:
    """Cut the events at window boundaries near equal event counts (binary search on t)."""
    width, height = int(cfg[C_WIDTH]), int(cfg[C_HEIGHT])
    t = events["t"]  # read by index only: np.searchsorted would copy the whole strided column
    start = np.array([0, origin, origin, 0, 0, -1, 0, 0], dtype=np.int64)  # no window open yet
    cuts: list[tuple[int, int, np.ndarray]] = [(0, 0, start)]  # events before `first`: garbage
    for q in range(1, n_parts):
        i = _first_valid(events, first + (len(events) - first) * q // n_parts, width, height, 1)
        if i < 0:
            break
        k, _ = _windows_until(cfg, origin, t[i])
        boundary, _ = _window_bounds(cfg, origin, k)
        cut = _search_t(events, boundary)
        if not cuts[-1][1] < k < k_end or not cuts[-1][0] < cut < len(events):
            continue
        # The window of the last event before the cut is open, its first event set the clock.
        last = _first_valid(events, cut - 1, width, height, -1)
        k_open, _ = _windows_until(cfg, origin, t[last])
        floor, _ = _window_bounds(cfg, origin, k_open)
        opener = _first_valid(events, max(_search_t(events, floor), first), width, height, 1)
        if opener < 0:
            continue
        state = np.array([k_open, max(floor, origin), t[opener], 1, 0, -1, 0, 0], dtype=np.int64)
        cuts.append((cut, int(k), state))
    ends = [cut for cut, _, _ in cuts[1:]] + [len(events)]
    k_ends = [k for _, k, _ in cuts[1:]] + [k_end]
    return [
        _Part(i, i_end, k_min, k_max, state)
        for (i, k_min, state), i_end, k_max in zip(cuts, ends, k_ends, strict=True)
    ]


def _bin_direct(
    events: np.ndarray,
    width: int,
    height: int,
    spec: WindowSpec,
    span_us: int | None,
    end: str,
    capacity: int,
    threads: int,
) -> BinnedRecording | None:
    """`bin_recording` by `_direct_run`, or None where the engine must do it.

    With several threads, each counts the events between two window boundaries into its own
    windows, starting from the state the events before would leave were they in time order. That
    holds if every part ends in the state the next one started from, and no part strayed into
    another's windows; otherwise (events out of order) one thread does it all again."""
    first = _first_valid(events, 0, width, height, 1)
    if first < 0:
        return None  # nothing valid: the engine's empty result is cheap
    origin = np.int64(events["t"][first])
    cfg = np.zeros(N_CFG, dtype=np.int64)
    _fill_config(cfg, spec, width, height, span_us)
    frame_shape = spec._shape(width, height)
    lut = _lookup_table(width, height, spec._roi(width, height), spec.downsample, frame_shape[0])
    limit = np.int64(spec.n_bins if spec.kind == "bins" else -1)
    whole = _plan_parts(events, first, cfg, origin, 1, capacity)
    plans = [whole]
    if threads > 1:
        parts = _plan_parts(events, first, cfg, origin, threads, capacity)
        if len(parts) > 1:
            plans.insert(0, parts)
    for parts in plans:
        store = _GrowingFrames(capacity, frame_shape, np.dtype(spec.dtype))
        if store.frames.shape[0] < capacity:
            return None  # more than the first allocation: the engine grows its output
        outcome = _run_parts(parts, events, cfg, origin, lut, store, limit)
        if outcome is not None:
            break
    else:
        return None
    counted, cnt, state = outcome
    if spec.kind == "bins":
        size = spec.n_bins
    else:
        size = int(state[D_K]) + (end == "emit")
        if end == "drop":
            cnt[K_END] += counted[state[D_K]]
    meta = store.meta
    _fill_bounds(cfg, origin, meta[:size])
    meta[:size, 2] = counted[:size]
    if spec.kind == "time" and end == "emit":
        meta[size - 1, 3] = 1
    store.tally[:] = state[D_BEYOND], size
    return store.result(size, _drops_from(cnt))


@njit(cache=True, nogil=True)
def _fill_bounds(cfg: np.ndarray, origin: np.int64, meta: np.ndarray) -> None:
    """meta[k, 0:2] = start and end of window k, for every row."""
    for k in range(meta.shape[0]):
        meta[k, 0] = _start(cfg, origin, k)
        meta[k, 1] = _end(cfg, origin, k)


def _run_parts(
    parts: list[_Part],
    events: np.ndarray,
    cfg: np.ndarray,
    origin: np.int64,
    lut: np.ndarray,
    store: _GrowingFrames,
    limit: np.int64,
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Run the parts, one thread each; (counts per window, drop counters, end state) or None."""
    frames = store.frames.reshape(store.frames.shape[0], -1)
    counted = np.zeros(frames.shape[0], dtype=np.int64)
    states = [part.state.copy() for part in parts]
    counters = [np.zeros(N_CNT, dtype=np.int64) for _ in parts]
    statuses = [_DIRECT_OK] * len(parts)

    def run(q: int) -> None:
        part = parts[q]
        statuses[q] = _direct_run(
            events, part.i, part.i_end, cfg, origin, lut, frames, counted, states[q],
            counters[q], limit, np.int64(part.k_min), np.int64(part.k_max),
        )  # fmt: skip

    helpers = [threading.Thread(target=run, args=(q,)) for q in range(1, len(parts))]
    for helper in helpers:
        helper.start()
    run(0)
    for helper in helpers:
        helper.join()
    if any(status != _DIRECT_OK for status in statuses):
        return None
    for q in range(1, len(parts)):
        if not np.array_equal(states[q - 1][:D_BEYOND], parts[q].state[:D_BEYOND]):
            return None
    return counted, np.sum(counters, axis=0), states[-1]


# --- whole recordings ----------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class BinnedRecording:
    """Frames of a whole recording plus per-window metadata and cumulative drops."""

    frames: np.ndarray  # [T, P, H', W']
    t_start_us: np.ndarray  # [T] int64
    t_end_us: np.ndarray  # [T] int64, exclusive
    n_events: np.ndarray  # [T] int64
    partial: np.ndarray  # [T] bool
    drops: Drops
    beyond_span: int = 0  # n_bins with a fixed span: events after the span (not in any frame)


def bin_recording(
    events: np.ndarray,
    sensor: StreamInfo | tuple[int, ...],
    spec: WindowSpec,
    *,
    end: str = "emit",
    threads: int | None = None,
) -> BinnedRecording:
    """Bin a whole recording exactly as the streaming stage would (see `frames_for_recording`).

    Non-overlapping time windows and n_bins without filters are counted straight into the
    output (`_bin_direct`), by `threads` threads (None: two for recordings of 2**21 events or
    more where two cores are free, else one); everything else, and whatever that path declines,
    runs the streaming engine on the recording in one chunk."""
    if end not in END_OPTIONS:
        raise ConfigError(f"end must be one of {END_OPTIONS}, got {end!r}")
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    ):
        raise ConfigError(f"threads must be a positive integer or None, got {threads!r}")
    events = np.ascontiguousarray(as_events(events))
    width, height = sensor_dims(sensor)
    # A pass over the events only where the answer matters: the recording's own span, and the
    # refusal of absurd outputs when max_gap_us is off. Elsewhere the ends are a fine estimate.
    exact = (spec.kind == "bins" and spec.span_us is None) or spec.max_gap_us is None
    if exact:
        n_valid, t_first, t_max = (int(v) for v in _scan_valid(events, width, height))
    else:
        n_valid = len(events)
        t_first, t_max = (int(events["t"][0]), int(events["t"][-1])) if n_valid else (0, 0)
    span = spec.span_us
    if spec.kind == "bins" and span is None:
        span = t_max - t_first + 1 if n_valid else 1
        if span > MAX_DURATION_US:
            raise ConfigError(
                f"the recording spans {span} µs (t={t_first}..{t_max}), more "
                "than the 2**40 µs a WindowSpec allows; set span_us explicitly"
            )
    frame_shape = spec._shape(width, height)
    if spec.kind == "bins":
        capacity = spec.n_bins
    elif n_valid == 0:
        capacity = 0
    elif spec.kind == "count":
        capacity = (n_valid - 1) // (spec.stride_events or spec.event_count) + 1
    else:
        capacity = max(t_max - t_first, 0) // (spec.stride_us or spec.window_us) + 1
    frame_bytes = math.prod(frame_shape) * np.dtype(spec.dtype).itemsize
    if spec.max_gap_us is None and capacity * frame_bytes > _MAX_OUTPUT_BYTES:
        raise EventDataError(
            f"the recording would need {capacity} windows "
            f"({capacity * frame_bytes / 2**30:.1f} GiB of frames, over the "
            f"{_MAX_OUTPUT_BYTES // 2**30} GiB limit): check its timestamps, use longer windows "
            "or set max_gap_us"
        )
    if _direct_fits(spec):
        threads = _default_threads(len(events)) if threads is None else threads
        result = _bin_direct(events, width, height, spec, span, end, capacity, threads)
        if result is not None:
            return result
    store = _GrowingFrames(capacity, frame_shape, np.dtype(spec.dtype))
    builder = _Recording(spec, width, height, span, store)
    builder.run(builder._feed(events))
    if spec.kind == "bins":
        # The span is fixed: complete all n_bins (empty ones too), then fill in the boundaries of
        # bins that never started (only possible after a resync).
        resynced = builder._cnt[K_RESYNC] != 0
        if builder.has_origin and not resynced:
            t_first = int(builder._st[S_ORIGIN])
            builder.run(builder._advance(t_first + span))
        elif builder.has_origin:
            _, t_first, _ = _scan_valid(events, width, height)
        builder.run(builder._finish("emit"))
        result = store.result(spec.n_bins, builder.totals)
        if resynced:  # otherwise the bins were stored with these very bounds
            k = np.arange(spec.n_bins, dtype=np.int64)
            n = spec.n_bins
            result.t_start_us[:] = t_first + (k * span + n - 1) // n
            result.t_end_us[:] = t_first + ((k + 1) * span + n - 1) // n
        return result
    builder.run(builder._finish(end))
    return store.result(store.size, builder.totals)


def frames_for_recording(
    events: np.ndarray,
    sensor: StreamInfo | tuple[int, ...],
    spec: WindowSpec,
    *,
    end: str = "emit",
    threads: int | None = None,
) -> np.ndarray:
    """Frames [T, P, H', W'] of a whole recording, bit-identical to what the streaming stage yields.

    It runs the same rules as the async stage's `FrameBuilder` (see `bin_recording`). `end`
    chooses whether the trailing incomplete window(s) are kept (time and count windows). With
    `n_bins` the result always has exactly n_bins frames: over the recording's own span
    (`span_us=None`: first valid event to last, inclusive, so no event is lost) or over a fixed
    span from the first event (events after it are left out, empty bins are zeros).
    """
    return bin_recording(events, sensor, spec, end=end, threads=threads).frames


@njit(cache=True, nogil=True)
def _scan_valid(events: np.ndarray, width: int, height: int) -> tuple[int, np.int64, np.int64]:
    """(number of events that pass ingest validation, t of the first one, largest t)."""
    n = events.shape[0]
    n_bad = 0
    t_max = events[0].t if n else np.int64(0)
    for i in range(n):  # clean recordings: one quick branch-free pass
        e = events[np.uint64(i)]
        n_bad += outside_sensor(e, width, height)
        t_max = max(t_max, e.t)
    if n_bad == 0:
        return n, events[0].t if n else np.int64(0), t_max
    n_valid = 0
    t_first = np.int64(0)
    for i in range(n):
        e = events[np.uint64(i)]
        t = e.t
        if outside_sensor(e, width, height):
            continue
        if n_valid == 0:
            t_first = t
            t_max = t
        t_max = max(t_max, t)
        n_valid += 1
    return n_valid, t_first, t_max


class _GrowingFrames:
    """Output frames indexed by window number; grows by doubling when an estimate was short.

    float16 frames are kept as float32 until `result` (Numba has no float16; counts saturate at
    65504, and every integer up to that is exact in float32, so the final cast rounds once)."""

    def __init__(self, capacity: int, shape: tuple[int, int, int], dtype: np.dtype) -> None:
        self.dtype = dtype
        store_dtype = np.dtype(np.float32) if dtype == np.float16 else dtype
        self.frame_bytes = math.prod(shape) * store_dtype.itemsize
        # Start from the estimate (zeroed memory costs nothing until written) but within reason;
        # `grow` grows the arrays when the estimate was short.
        capacity = min(capacity, max(1, _INITIAL_OUTPUT_BYTES // max(self.frame_bytes, 1)))
        self.frames = np.zeros((max(capacity, 1), *shape), dtype=store_dtype)
        self.meta = np.zeros((max(capacity, 1), 4), dtype=np.int64)
        self.tally = np.zeros(2, dtype=np.int64)  # events beyond the span, windows stored up to

    @property
    def size(self) -> int:
        return int(self.tally[1])

    def grow(self, k: int) -> None:
        """Make room for window k."""
        if k < self.frames.shape[0]:
            return
        most = _MAX_OUTPUT_BYTES // max(self.frame_bytes, 1)
        if k + 1 > most:
            raise EventDataError(
                f"the recording would need at least {k + 1} windows "
                f"({(k + 1) * self.frame_bytes / 2**30:.1f} GiB of frames, over the "
                f"{_MAX_OUTPUT_BYTES // 2**30} GiB limit): check its timestamps, use longer "
                "windows or a smaller max_gap_us"
            )
        grow = min(max(k + 1, 2 * self.frames.shape[0]), most)
        size = self.size
        frames = np.zeros((grow, *self.frames.shape[1:]), dtype=self.frames.dtype)
        frames[:size] = self.frames[:size]
        meta = np.zeros((grow, 4), dtype=np.int64)
        meta[:size] = self.meta[:size]
        self.frames, self.meta = frames, meta

    def result(self, size: int, drops: Drops) -> BinnedRecording:
        self.grow(size - 1)
        meta = self.meta[:size]
        frames = self.frames[:size]
        return BinnedRecording(
            frames=frames if frames.dtype == self.dtype else frames.astype(self.dtype),
            t_start_us=meta[:, 0].copy(),
            t_end_us=meta[:, 1].copy(),
            n_events=meta[:, 2].copy(),
            partial=meta[:, 3].astype(bool),
            drops=drops,
            beyond_span=int(self.tally[0]),
        )


__all__ = [
    "BinnedRecording",
    "Drops",
    "FrameBuilder",
    "Window",
    "WindowSpec",
    "bin_recording",
    "frames_for_recording",
]
