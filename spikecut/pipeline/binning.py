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
effective clip (`min(clip, max of dtype)`), and every saturated increment is counted as `clipped`:
a count never wraps around.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields, replace
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
        width, height = sensor_dims(sensor)
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
    N_CFG,
) = range(14)

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
_OUTSIDE = -(2**40)
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


@njit(cache=True, nogil=True)
def _count_run(
    events: np.ndarray,
    i: int,
    i_end: int,
    t_lo: np.int64,
    t_span: np.uint64,
    pol_lut: np.ndarray,
    row_lut: np.ndarray,
    col_lut: np.ndarray,
    frame: np.ndarray,
    cap: np.int64,
) -> tuple[int, np.int64]:
    """The hot loop: count unfiltered events into one window's frame while they fall in
    [t_lo, t_lo + t_span), up to index i_end. Stops, without consuming it, at the first event that
    needs the general path (outside the segment, the sensor or the ROI).

    Kept tiny on purpose: with few live values everything stays in registers.
    """
    clipped = np.int64(0)
    for k in range(i, i_end):
        e = events[np.uint64(k)]  # unsigned indices: no negative-index wraparound code
        pol = pol_lut[e.p]
        row = row_lut[e.y]
        col = col_lut[e.x]
        # One branch for both exits: this form runs about 1.6x faster than two separate tests.
        if (np.uint64(e.t - t_lo) >= t_span) | ((pol | row | col) < 0):
            return k, clipped
        j = np.uint64(pol + row + col)
        c = frame[j]
        if c < cap:
            frame[j] = c + 1
        else:
            clipped += 1
    return i_end, clipped


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
    """`_count_run` with the filters applied: returns (i, counted, clipped, t_first, t_last)."""
    width = cfg[C_WIDTH]
    height = cfg[C_HEIGHT]
    refractory_us = cfg[C_REFRACTORY_US]
    filter_us = cfg[C_FILTER_US]
    counted = np.int64(0)
    clipped = np.int64(0)
    t_first = np.int64(0)
    t_last = np.int64(0)
    while i < i_end and counted < budget:
        e = events[i]
        t = e.t
        if np.uint64(t - t_lo) >= t_span:
            break
        x = np.int64(e.x)
        y = np.int64(e.y)
        pol = pol_lut[e.p]
        row = row_lut[y]
        col = col_lut[x]
        if x >= width or y >= height or pol < 0:
            break
        i += 1
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
        if (row | col) < 0:
            cnt[K_ROI] += 1
            continue
        j = pol + row + col
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
) -> int:
    """Count the events that continue the current single-window segment (the common case).

    `filters` is None when no filter is on: Numba then compiles this without the filtered loop,
    which keeps the unfiltered hot loop about 1.7x faster.
    """
    n = events.shape[0]
    plane = cfg[C_PLANE]
    base = st[S_SEG_SLOT] * plane
    frame = acc[base : base + plane]
    if cfg[C_MODE] == MODE_COUNT:
        t_lo, t_span = -T_LIMIT, np.uint64(2 * T_LIMIT + 1)
        budget = st[S_SEG_HI] - st[S_ACCEPTED]
    else:
        t_lo, t_span = st[S_SEG_LO], np.uint64(st[S_SEG_HI] - st[S_SEG_LO])
        budget = n
    start = i
    if filters is None:
        i, clipped = _count_run(
            events,
            i,
            min(n, i + budget),
            t_lo,
            t_span,
            pol_lut,
            row_lut,
            col_lut,
            frame,
            cfg[C_CAP],
        )
        counted = i - start
        if counted != 0:
            _tally(st, counted, events[start].t, events[i - 1].t)
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
        _tally(st, counted, t_first, t_last)
    cnt[K_CLIPPED] += clipped
    if cfg[C_MODE] == MODE_COUNT and counted != 0:
        st[S_ACCEPTED] += counted
        if st[S_ACCEPTED] >= st[S_SEG_HI]:  # the oldest window(s) just got their last event
            st[S_K_CLOSE] = max(
                st[S_K_CLOSE], (st[S_ACCEPTED] - cfg[C_WINDOW]) // cfg[C_STRIDE] + 1
            )
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
    if x >= width or y >= height or p > 1 or t > T_LIMIT or t < -T_LIMIT:
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
    row = row_lut[y]
    col = col_lut[x]
    if row < 0 or col < 0:
        cnt[K_ROI] += 1
        return i + 1
    j = pol_lut[p] + row + col
    plane = cfg[C_PLANE]
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


# --- the builder ---------------------------------------------------------------------------------


def _count_dtype(cap: int) -> np.dtype:
    return np.dtype(np.uint8 if cap <= 255 else np.uint16 if cap <= 65535 else np.int32)


def _effective_cap(spec: WindowSpec) -> int:
    dtype = np.dtype(spec.dtype)
    if dtype.kind == "f":
        dtype_max = 65504 if dtype.itemsize == 2 else _INT32_MAX
    else:
        dtype_max = min(int(np.iinfo(dtype).max), _INT32_MAX)
    return min(spec.clip or _INT32_MAX, dtype_max)


class FrameBuilder:
    """Incremental events-to-frames for one stream; the engine behind both windowing paths.

    `push(chunk)` returns the windows that chunk completed; `advance_to(t)` closes windows that end
    at or before sensor time t (live sources' wall clock); `finish(end)` emits or drops the
    started-but-incomplete windows. Memory is fixed at construction: a ring of a few count frames
    plus per-pixel filter memories; each produced `Window` gets a fresh copy of its small frame.
    """

    def __init__(self, spec: WindowSpec, sensor: StreamInfo | tuple[int, ...]) -> None:
        if not spec.streamable:
            raise ConfigError(
                "n_bins over the recording's own span needs the whole recording: set "
                "WindowSpec.span_us to stream, or use frames_for_recording"
            )
        self.spec = spec
        self.width, self.height = sensor_dims(sensor)
        x0, y0, roi_w, roi_h = spec._roi(self.width, self.height)
        self.frame_shape = spec.frame_shape((self.width, self.height))
        n_pol, h_out, w_out = self.frame_shape
        plane = h_out * w_out
        f = spec.downsample
        # Lookup tables from sensor coordinates to offsets in the flat frame; negative = not in
        # the frame (outside the sensor, outside the ROI, polarity > 1). Full uint16/uint8 range,
        # so the hot loop validates with a single sign test.
        self._col_lut = np.full(65536, _OUTSIDE, dtype=np.int64)
        self._col_lut[x0 : x0 + roi_w] = np.arange(roi_w) // f
        self._row_lut = np.full(65536, _OUTSIDE, dtype=np.int64)
        self._row_lut[y0 : y0 + roi_h] = (np.arange(roi_h) // f) * w_out
        self._pol_lut = np.full(256, _OUTSIDE, dtype=np.int64)
        self._pol_lut[:2] = (0, plane) if n_pol == 2 else (0, 0)

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
        if spec.kind == "time":
            mode, window, stride = MODE_TIME, spec.window_us, spec.stride_us or spec.window_us
            open_windows = -(-window // stride)
        elif spec.kind == "count":
            mode, window = MODE_COUNT, spec.event_count
            stride = spec.stride_events or spec.event_count
            open_windows = -(-window // stride)
        else:
            mode, window, stride, open_windows = MODE_BINS, 0, 1, 1
        ring = open_windows + 8
        cfg = np.zeros(N_CFG, dtype=np.int64)
        cfg[C_WIDTH], cfg[C_HEIGHT], cfg[C_MODE] = self.width, self.height, mode
        cfg[C_WINDOW], cfg[C_STRIDE] = window, stride
        cfg[C_SPAN], cfg[C_NBINS] = spec.span_us or 1, spec.n_bins or 1
        cfg[C_PLANE] = n_pol * plane
        cfg[C_REFRACTORY_US] = spec.refractory_us or 0
        cfg[C_FILTER_US] = spec.filter_us or 0
        cfg[C_CAP] = cap
        cfg[C_RING] = ring
        cfg[C_MAX_GAP] = spec.max_gap_us or 0
        self._cfg = cfg
        self._ring = ring
        self._acc = np.zeros(ring * n_pol * plane, dtype=_count_dtype(cap))
        self._slot_n = np.zeros(ring, dtype=np.int64)
        self._slot_tfirst = np.zeros(ring, dtype=np.int64)
        self._slot_tlast = np.zeros(ring, dtype=np.int64)
        self._slots = (self._slot_n, self._slot_tfirst, self._slot_tlast)
        self._zeroed = np.zeros(ring, dtype=bool)  # slot already emptied by take_counts
        self._st = np.zeros(N_ST, dtype=np.int64)
        self._cnt = np.zeros(N_CNT, dtype=np.int64)
        self._reported = np.zeros(N_CNT, dtype=np.int64)
        self.reset()

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

    def reset(self) -> None:
        """Start a new, unrelated stream: forget windows, origin, filter memories and counters."""
        self._acc.fill(0)
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
        They are separate compiled calls on purpose: compiled into one function, the hot loop
        runs about 1.7x slower. Sets st[S_STATUS] (RUN_DONE, RUN_DRAIN or RUN_GAP).
        """
        st, n = self._st, events.shape[0]
        args = (self._cfg, st, self._cnt, self._pol_lut, self._row_lut, self._col_lut)
        st[S_STATUS] = RUN_DONE
        while i < n:
            if st[S_SEG_VALID] != 0 and st[S_SEG_N] == 1:
                i = _run_segment(events, i, *args, self._filters, self._acc)
                if i >= n:
                    break
            i = _general(events, i, *args, self._filters, self._acc, *self._slots)
            if st[S_STATUS] != RUN_DONE:
                break
        _flush_segment(st, self._cfg[C_RING], *self._slots)
        return i

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
        if not self._zeroed[slot]:
            self._slot_view(slot).fill(0)
        self._zeroed[slot] = False
        self._slot_n[slot] = 0

    def _slot_view(self, slot: int) -> np.ndarray:
        plane = int(self._cfg[C_PLANE])
        return self._acc[slot * plane : (slot + 1) * plane]


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
) -> BinnedRecording:
    """Bin a whole recording with the streaming kernel (see `frames_for_recording`)."""
    if end not in END_OPTIONS:
        raise ConfigError(f"end must be one of {END_OPTIONS}, got {end!r}")
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
    if spec.kind == "bins" and spec.span_us is None:
        span = t_max - t_first + 1 if n_valid else 1
        if span > MAX_DURATION_US:
            raise ConfigError(
                f"the recording spans {span} µs (t={t_first}..{t_max}), more "
                "than the 2**40 µs a WindowSpec allows; set span_us explicitly"
            )
        spec = spec.with_(span_us=span)
    builder = FrameBuilder(spec, (width, height))
    frame_shape = builder.frame_shape
    if spec.kind == "bins":
        capacity = spec.n_bins
    elif n_valid == 0:
        capacity = 0
    elif spec.kind == "count":
        capacity = (n_valid - 1) // (spec.stride_events or spec.event_count) + 1
    else:
        capacity = max(t_max - t_first, 0) // (spec.stride_us or spec.window_us) + 1
    frame_bytes = int(np.prod(frame_shape)) * np.dtype(spec.dtype).itemsize
    if spec.max_gap_us is None and capacity * frame_bytes > _MAX_OUTPUT_BYTES:
        raise EventDataError(
            f"the recording would need {capacity} windows "
            f"({capacity * frame_bytes / 2**30:.1f} GiB of frames, over the "
            f"{_MAX_OUTPUT_BYTES // 2**30} GiB limit): check its timestamps, use longer windows "
            "or set max_gap_us"
        )
    store = _GrowingFrames(capacity, frame_shape, np.dtype(spec.dtype))
    limit = spec.n_bins if spec.kind == "bins" else None
    beyond = [0]

    def store_all(closed: Iterator[_Closed]) -> None:
        for c in closed:
            if limit is not None and c.index >= limit:
                beyond[0] += c.n_events
            else:
                builder.take_counts(c.slot, store.slot(c))

    store_all(builder._feed(events))
    if spec.kind == "bins":
        # The span is fixed: complete all n_bins (empty ones too), then fill in the boundaries of
        # bins that never started (only possible after a resync).
        if builder.has_origin and builder.totals.resyncs == 0:
            t_first = int(builder._st[S_ORIGIN])
        elif builder.has_origin:
            _, t_first, _ = _scan_valid(events, width, height)
        if builder.has_origin and builder.totals.resyncs == 0:
            store_all(builder._advance(t_first + spec.span_us))
        store_all(builder._finish("emit"))
        result = store.result(spec.n_bins, builder.totals, beyond[0])
        if builder.has_origin:
            k = np.arange(spec.n_bins, dtype=np.int64)
            n, span = spec.n_bins, spec.span_us
            result.t_start_us[:] = t_first + (k * span + n - 1) // n
            result.t_end_us[:] = t_first + ((k + 1) * span + n - 1) // n
        return result
    store_all(builder._finish(end))
    return store.result(store.size, builder.totals, 0)


def frames_for_recording(
    events: np.ndarray,
    sensor: StreamInfo | tuple[int, ...],
    spec: WindowSpec,
    *,
    end: str = "emit",
) -> np.ndarray:
    """Frames [T, P, H', W'] of a whole recording, bit-identical to what the streaming stage yields.

    It runs the same `FrameBuilder` the async stage runs, on the recording in one chunk. `end`
    chooses whether the trailing incomplete window(s) are kept (time and count windows). With
    `n_bins` the result always has exactly n_bins frames: over the recording's own span
    (`span_us=None`: first valid event to last, inclusive, so no event is lost) or over a fixed
    span from the first event (events after it are left out, empty bins are zeros).
    """
    return bin_recording(events, sensor, spec, end=end).frames


@njit(cache=True, nogil=True)
def _scan_valid(events: np.ndarray, width: int, height: int) -> tuple[int, np.int64, np.int64]:
    """(number of events that pass ingest validation, t of the first one, largest t)."""
    n = events.shape[0]
    n_bad = 0
    t_max = events[0].t if n else np.int64(0)
    for i in range(n):  # clean recordings: one quick branch-free pass
        e = events[np.uint64(i)]
        t = e.t
        n_bad += (
            (np.int64(e.x) >= width)
            | (np.int64(e.y) >= height)
            | (e.p > 1)
            | (np.uint64(t + T_LIMIT) > np.uint64(2 * T_LIMIT))
        )
        t_max = max(t_max, t)
    if n_bad == 0:
        return n, events[0].t if n else np.int64(0), t_max
    n_valid = 0
    t_first = np.int64(0)
    for i in range(n):
        e = events[np.uint64(i)]
        t = e.t
        if e.x >= width or e.y >= height or e.p > 1 or t > T_LIMIT or t < -T_LIMIT:
            continue
        if n_valid == 0:
            t_first = t
            t_max = t
        t_max = max(t_max, t)
        n_valid += 1
    return n_valid, t_first, t_max


class _GrowingFrames:
    """Output frames indexed by window number; grows by doubling when an estimate was short."""

    def __init__(self, capacity: int, shape: tuple[int, int, int], dtype: np.dtype) -> None:
        self.frame_bytes = int(np.prod(shape)) * dtype.itemsize
        # Start from the estimate (zeroed memory costs nothing until written) but within reason;
        # `slot` grows the arrays when the estimate was short.
        capacity = min(capacity, max(1, _INITIAL_OUTPUT_BYTES // max(self.frame_bytes, 1)))
        self.frames = np.zeros((max(capacity, 1), *shape), dtype=dtype)
        self.meta = np.zeros((max(capacity, 1), 4), dtype=np.int64)
        self.size = 0

    def slot(self, closed: _Closed) -> np.ndarray:
        """The output frame for a closed window (growing the arrays when needed), its metadata
        recorded; the caller fills the frame."""
        k = closed.index
        if k >= self.frames.shape[0]:
            most = _MAX_OUTPUT_BYTES // max(self.frame_bytes, 1)
            if k + 1 > most:
                raise EventDataError(
                    f"the recording would need at least {k + 1} windows "
                    f"({(k + 1) * self.frame_bytes / 2**30:.1f} GiB of frames, over the "
                    f"{_MAX_OUTPUT_BYTES // 2**30} GiB limit): check its timestamps, use longer "
                    "windows or a smaller max_gap_us"
                )
            grow = min(max(k + 1, 2 * self.frames.shape[0]), most)
            frames = np.zeros((grow, *self.frames.shape[1:]), dtype=self.frames.dtype)
            frames[: self.size] = self.frames[: self.size]
            meta = np.zeros((grow, 4), dtype=np.int64)
            meta[: self.size] = self.meta[: self.size]
            self.frames, self.meta = frames, meta
        self.meta[k] = (closed.t_start_us, closed.t_end_us, closed.n_events, closed.partial)
        self.size = max(self.size, k + 1)
        return self.frames[k]

    def result(self, size: int, drops: Drops, beyond: int) -> BinnedRecording:
        if size > self.frames.shape[0]:
            self.slot(_Closed(size - 1, 0, 0, 0, 0, False))
        meta = self.meta[:size]
        return BinnedRecording(
            frames=self.frames[:size],
            t_start_us=meta[:, 0].copy(),
            t_end_us=meta[:, 1].copy(),
            n_events=meta[:, 2].copy(),
            partial=meta[:, 3].astype(bool),
            drops=drops,
            beyond_span=beyond,
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
