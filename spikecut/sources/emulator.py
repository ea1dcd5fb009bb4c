"""A DVS emulator: image sequences in, `EVENT_DTYPE` events out.

Each pixel compares its log intensity with a reference level stored at its last event. Between two
frames the log intensity is interpolated linearly in time, so a change spanning several contrast
thresholds gives several events at the times the ramp crosses them. After an event the pixel stays
in reset for the refractory period: its reference follows the input and it cannot fire, as in the
physical circuit. Per-pixel thresholds are drawn once from a Gaussian around the nominal ON/OFF
thresholds (fixed-pattern mismatch). Background activity is a Poisson process per pixel whose
events reset the pixel like real ones.

Every random choice is fixed by the seed, and the noise of each pixel is a counter-based stream of
its own, so feeding the frames in chunks gives exactly the events of feeding them all at once: the
emulator can stand in for a live camera.

`saccade_frames` and `emulate_saccades` move a static image along N-MNIST's three saccades, which is
how the emulated digits dataset turns still images into event recordings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from spikecut.errors import ConfigError, EventDataError
from spikecut.sources.events import StreamInfo, empty_events, make_events

__all__ = [
    "DVSEmulator",
    "EmulatorConfig",
    "SaccadeConfig",
    "emulate",
    "emulate_saccades",
    "saccade_frames",
]

_LUMA = np.array([0.299, 0.587, 0.114])
_NO_HOLD = np.iinfo(np.int64).min // 2


@dataclass(frozen=True)
class EmulatorConfig:
    """Sensor parameters. Thresholds are in natural-log units of intensity (0.2 ≈ 22 % contrast).

    `threshold_sigma` is the standard deviation of the per-pixel threshold mismatch; drawn
    thresholds are clipped below at `min_threshold`. `noise_rate_hz` is the background-activity rate
    of each pixel (half ON, half OFF). `log_eps` is added to the intensity before the logarithm, so
    black pixels have a finite log level (a DVS's dark current does the same).
    """

    threshold_on: float = 0.2
    threshold_off: float = 0.2
    threshold_sigma: float = 0.03
    min_threshold: float = 0.01
    refractory_us: int = 0
    noise_rate_hz: float = 0.0
    log_eps: float = 1e-3

    def __post_init__(self) -> None:
        for name in ("threshold_on", "threshold_off", "min_threshold", "log_eps"):
            value = getattr(self, name)
            if not value > 0:
                raise ConfigError(f"EmulatorConfig.{name} must be > 0, got {value!r}")
        for name in ("threshold_sigma", "refractory_us", "noise_rate_hz"):
            value = getattr(self, name)
            if not value >= 0:
                raise ConfigError(f"EmulatorConfig.{name} must be >= 0, got {value!r}")


def _luminance(frames: np.ndarray) -> np.ndarray:
    """Frames [N,H,W] or [N,H,W,3] (unsigned integers, or floats in [0, 1]) as float32 intensity.

    float32 is ample for log levels compared against thresholds of ~0.1 and makes the logarithm,
    the costliest step, several times faster.
    """
    frames = np.asarray(frames)
    if frames.ndim == 4 and frames.shape[-1] == 3:
        scale = np.iinfo(frames.dtype).max if frames.dtype.kind == "u" else 1.0
        return (frames.astype(np.float32) @ (_LUMA / scale).astype(np.float32)).astype(np.float32)
    if frames.ndim != 3:
        raise EventDataError(
            f"frames must have shape [N, H, W] or [N, H, W, 3], got {frames.shape}"
        )
    if frames.dtype.kind == "u":
        return frames * np.float32(1 / np.iinfo(frames.dtype).max)
    if frames.dtype.kind not in "fi":
        raise EventDataError(f"frames must hold numbers, got dtype {frames.dtype}")
    return frames.astype(np.float32)


class DVSEmulator:
    """Stateful emulator for one sensor of `width` x `height` pixels.

    Call `feed(frames, times_us)` any number of times with consecutive frames; each call returns
    the time-ordered events up to its last frame. The first frame ever fed only sets the initial
    state. Splitting a sequence into chunks anywhere gives the same events as one call.
    """

    def __init__(
        self,
        width: int,
        height: int,
        config: EmulatorConfig | None = None,
        seed: int | np.random.SeedSequence | np.random.Generator | None = 0,
    ) -> None:
        self.config = config or EmulatorConfig()
        self.info = StreamInfo(int(width), int(height), "emulator", time_origin="recording")
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        n = self.info.width * self.info.height
        cfg = self.config
        self._threshold_on = np.maximum(
            cfg.threshold_on + cfg.threshold_sigma * rng.standard_normal(n), cfg.min_threshold
        )
        self._threshold_off = np.maximum(
            cfg.threshold_off + cfg.threshold_sigma * rng.standard_normal(n), cfg.min_threshold
        )
        self._noise_key = np.uint64(rng.integers(0, 2**63, dtype=np.int64))
        self._ref = np.zeros(n)
        self._log_prev = np.zeros(n, dtype=np.float32)
        self._hold_until = np.full(n, _NO_HOLD, dtype=np.int64)
        self._noise_next = np.zeros(n, dtype=np.int64)
        self._noise_count = np.zeros(n, dtype=np.uint64)
        self._t_prev: int | None = None

    @property
    def thresholds(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-pixel ON and OFF thresholds, each [H, W]."""
        shape = (self.info.height, self.info.width)
        return self._threshold_on.reshape(shape), self._threshold_off.reshape(shape)

    @property
    def t_last_us(self) -> int | None:
        """Timestamp of the last frame fed, or None before the first."""
        return self._t_prev

    def feed(self, frames: np.ndarray, times_us: np.ndarray) -> np.ndarray:
        """Events caused by `frames` (shape [N,H,W] or [N,H,W,3]) taken at `times_us` (int µs)."""
        intensity = _luminance(frames)
        times = np.asarray(times_us)
        n_frames = intensity.shape[0]
        if intensity.shape[1:] != (self.info.height, self.info.width):
            raise EventDataError(
                f"frames are {intensity.shape[2]}x{intensity.shape[1]} (WxH), the emulator is "
                f"{self.info.width}x{self.info.height}"
            )
        if times.shape != (n_frames,) or times.dtype.kind not in "iu":
            raise EventDataError(
                f"times_us must be {n_frames} integer microseconds, got shape {times.shape} "
                f"dtype {times.dtype}"
            )
        times = times.astype(np.int64)
        if n_frames == 0:
            return empty_events()
        if times[0] < 0:
            raise EventDataError(f"frame times must be >= 0 us, frame 0 is at {times[0]} us")
        back = np.flatnonzero(np.diff(times) <= 0)
        if back.size:
            i = int(back[0]) + 1
            raise EventDataError(
                f"frame times must increase strictly: frame {i} at {times[i]} us follows "
                f"{times[i - 1]} us"
            )
        if self._t_prev is not None and times[0] <= self._t_prev:
            raise EventDataError(
                f"frame 0 at {times[0]} us does not follow the last frame fed ({self._t_prev} us)"
            )
        if not (intensity.min() >= 0 and np.isfinite(intensity.max())):
            i, y, x = np.argwhere(~np.isfinite(intensity) | (intensity < 0))[0]
            raise EventDataError(
                f"frame {i} pixel (x={x}, y={y}) has intensity {intensity[i, y, x]!r}; "
                "intensities must be finite and >= 0"
            )
        logs = np.log(intensity.reshape(n_frames, -1) + np.float32(self.config.log_eps))

        if self._t_prev is None:
            self._start(logs[0], int(times[0]))
            logs, times = logs[1:], times[1:]
            if times.size == 0:
                return empty_events()

        args = (
            logs,
            times,
            self._t_prev,
            self._log_prev,
            self._threshold_on,
            self._threshold_off,
            int(self.config.refractory_us),
            self.config.noise_rate_hz * 1e-6,
            self._noise_key,
        )
        state = (self._ref, self._hold_until, self._noise_next, self._noise_count)
        # Pass 1 counts on a copy of the state, pass 2 fills arrays of the exact size.
        dummy_t = np.empty(0, np.int64)
        dummy_i = np.empty(0, np.int32)
        dummy_p = np.empty(0, np.uint8)
        count = _emulate(*args, *(s.copy() for s in state), dummy_t, dummy_i, dummy_p, True)
        out_t = np.empty(count, np.int64)
        out_pixel = np.empty(count, np.int32)
        out_p = np.empty(count, np.uint8)
        _emulate(*args, *state, out_t, out_pixel, out_p, False)
        self._log_prev = logs[-1].copy()
        self._t_prev = int(times[-1])

        order = np.argsort(out_t, kind="stable")
        pixel = out_pixel[order]
        return make_events(
            out_t[order], pixel % self.info.width, pixel // self.info.width, out_p[order]
        )

    def _start(self, log_first: np.ndarray, t_first: int) -> None:
        self._ref[:] = log_first
        self._log_prev = log_first.copy()
        self._t_prev = t_first
        self._hold_until[:] = _NO_HOLD
        rate_per_us = self.config.noise_rate_hz * 1e-6
        _first_noise(self._noise_next, self._noise_count, self._noise_key, t_first, rate_per_us)


def emulate(
    frames: np.ndarray,
    times_us: np.ndarray,
    config: EmulatorConfig | None = None,
    seed: int | np.random.SeedSequence | np.random.Generator | None = 0,
) -> np.ndarray:
    """One-shot conversion of a whole image sequence to events."""
    frames = np.asarray(frames)
    if frames.ndim not in (3, 4):
        raise EventDataError(
            f"frames must have shape [N, H, W] or [N, H, W, 3], got {frames.shape}"
        )
    emulator = DVSEmulator(frames.shape[2], frames.shape[1], config, seed)
    return emulator.feed(frames, times_us)


# --- Numba kernels -------------------------------------------------------------------------------

_NEVER = np.iinfo(np.int64).max


@njit(cache=True, inline="always")
def _mix(z):
    """splitmix64's finaliser: a well-spread uint64 from any uint64."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=True, inline="always")
def _uniform(key, pixel, counter):
    """A uniform in (0, 1) that depends only on (key, pixel, counter)."""
    h = _mix(key ^ _mix(np.uint64(pixel) * np.uint64(0x9E3779B97F4A7C15) + counter))
    return ((h >> np.uint64(11)) + np.uint64(1)) * (1.0 / 9007199254740994.0)


@njit(cache=True, inline="always")
def _gap_us(key, pixel, counter, rate_per_us):
    """Exponential waiting time (integer µs, at least 1) to a pixel's next noise event."""
    gap = -np.log(_uniform(key, pixel, counter)) / rate_per_us
    return max(np.int64(1), np.int64(gap + 0.5)) if gap < 4e18 else _NEVER


@njit(cache=True)
def _first_noise(noise_next, noise_count, key, t_first, rate_per_us):
    for pixel in range(noise_next.shape[0]):
        noise_count[pixel] = np.uint64(1)
        if rate_per_us > 0:
            gap = _gap_us(key, pixel, np.uint64(0), rate_per_us)
            noise_next[pixel] = _NEVER if gap == _NEVER else t_first + gap
        else:
            noise_next[pixel] = _NEVER


@njit(cache=True)
def _emulate(
    logs,
    times,
    t_start,
    log_start,
    threshold_on,
    threshold_off,
    refractory_us,
    rate_per_us,
    key,
    ref,
    hold_until,
    noise_next,
    noise_count,
    out_t,
    out_pixel,
    out_p,
    count_only,
):
    """Events of every pixel over the frame intervals, in (interval, pixel, time) order.

    All times inside an interval are relative to its start t0, as float64 µs for level crossings
    (exact for the linear ramp) and int64 for events, refractory ends and noise arrivals.
    """
    n = 0
    n_frames, n_pixels = logs.shape
    t0 = t_start
    for j in range(n_frames):
        t1 = times[j]
        dt = t1 - t0
        for pixel in range(n_pixels):
            level0 = log_start[pixel] if j == 0 else logs[j - 1, pixel]
            slope = (logs[j, pixel] - level0) / dt
            r = ref[pixel]
            hold = hold_until[pixel] - t0  # relative; the pixel may fire at hold or later
            cursor = 0.0
            while True:
                if hold > cursor:
                    if hold > dt:
                        break
                    cursor = float(hold)
                    r = level0 + slope * cursor  # released: the reference is the input now
                crossing = np.inf
                polarity = 0
                if slope > 0:
                    crossing = max((r + threshold_on[pixel] - level0) / slope, cursor)
                    polarity = 1
                elif slope < 0:
                    crossing = max((r - threshold_off[pixel] - level0) / slope, cursor)
                # Background events that arrived while the pixel was held are lost.
                while noise_next[pixel] - t0 < cursor:
                    noise_next[pixel] = _advance_noise(
                        noise_next[pixel], noise_count, key, pixel, rate_per_us
                    )
                noise_rel = noise_next[pixel] - t0
                noise_first = noise_rel < dt and noise_rel <= crossing
                if not noise_first and crossing > dt:
                    break
                if noise_first:
                    t_event = noise_rel
                    polarity = np.uint8(_uniform(key, pixel, ~noise_count[pixel]) < 0.5)
                    noise_next[pixel] = _advance_noise(
                        noise_next[pixel], noise_count, key, pixel, rate_per_us
                    )
                    cursor = float(noise_rel)
                    r = level0 + slope * cursor
                else:
                    t_event = np.int64(crossing)
                    cursor = crossing
                    r = r + threshold_on[pixel] if polarity == 1 else r - threshold_off[pixel]
                if not count_only:
                    out_t[n] = t0 + t_event
                    out_pixel[n] = pixel
                    out_p[n] = polarity
                n += 1
                if refractory_us > 0:
                    hold = t_event + refractory_us
            ref[pixel] = r
            hold_until[pixel] = hold + t0 if hold > 0 else _NO_HOLD
        t0 = t1
    return n


@njit(cache=True, inline="always")
def _advance_noise(current, noise_count, key, pixel, rate_per_us):
    gap = _gap_us(key, pixel, noise_count[pixel], rate_per_us)
    noise_count[pixel] += np.uint64(1)
    return _NEVER if gap == _NEVER or current > _NEVER - gap else current + gap


# --- Saccades: how N-MNIST turned still images into recordings -----------------------------------


@dataclass(frozen=True)
class SaccadeConfig:
    """Three saccades along a triangle, as the pan-tilt unit moved the ATIS for N-MNIST.

    The image is scaled to `image_px` (its longest side) and starts at the canvas position that
    centres the whole motion. `vertices_px` are the image offsets the saccades visit in turn before
    returning to the first one. Each saccade takes `saccade_us`: the image rests `dwell_us / 2`,
    moves with a raised-cosine velocity profile (fastest midway), and rests again, which gives
    N-MNIST's three bursts of events. The defaults reproduce N-MNIST's geometry and timing, measured
    on the real recordings: a 28 px digit on a 34x34 canvas, bursts at 10-90, 110-190 and
    210-290 ms peaking midway, 300 ms in all.
    `background` is the canvas intensity relative to the brightest image value (a monitor's black
    level is not zero).
    """

    width: int = 34
    height: int = 34
    image_px: float = 28.0
    vertices_px: tuple[tuple[float, float], ...] = ((0.0, 0.0), (2.0, 4.5), (5.0, 0.0))
    saccade_us: int = 100_000
    dwell_us: int = 20_000
    frame_rate_hz: float = 1000.0
    background: float = 0.1

    def __post_init__(self) -> None:
        if len(self.vertices_px) < 2:
            raise ConfigError(
                f"SaccadeConfig.vertices_px needs at least 2 points, got {self.vertices_px!r}"
            )
        for name in ("width", "height", "image_px", "saccade_us", "frame_rate_hz"):
            value = getattr(self, name)
            if not value > 0:
                raise ConfigError(f"SaccadeConfig.{name} must be > 0, got {value!r}")
        if not 0 <= self.dwell_us < self.saccade_us:
            raise ConfigError(
                f"SaccadeConfig.dwell_us must be in [0, saccade_us), got {self.dwell_us!r}"
            )
        if not 0 <= self.background <= 1:
            raise ConfigError(f"SaccadeConfig.background must be in [0, 1], got {self.background}")

    @property
    def duration_us(self) -> int:
        return self.saccade_us * len(self.vertices_px)


def saccade_frames(
    image: np.ndarray, config: SaccadeConfig | None = None, offset_px: tuple[float, float] = (0, 0)
) -> tuple[np.ndarray, np.ndarray]:
    """Render `image` (2-D, values in [0, 1]) moving along the saccades.

    Returns `(frames [N, height, width] float32, times_us [N] int64)`, frames at `frame_rate_hz`
    from t = 0 to the end of the last saccade. Sub-pixel positions are rendered by bilinear
    sampling; `offset_px` shifts the whole path (per-sample jitter).
    """
    config = config or SaccadeConfig()
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2 or image.size == 0:
        raise EventDataError(f"image must be a non-empty 2-D array, got shape {image.shape}")
    n_frames = int(round(config.duration_us * config.frame_rate_hz * 1e-6)) + 1
    times = np.round(np.linspace(0, config.duration_us, n_frames)).astype(np.int64)

    vertices = np.asarray(config.vertices_px, dtype=np.float64)
    k = np.minimum(times // config.saccade_us, len(vertices) - 1)
    moving = (times - k * config.saccade_us - config.dwell_us / 2) / (
        config.saccade_us - config.dwell_us
    )
    progress = (1 - np.cos(np.pi * np.clip(moving, 0, 1))) / 2
    start = vertices[k]
    end = vertices[(k + 1) % len(vertices)]
    path = start + (end - start) * progress[:, None]

    scale = config.image_px / max(image.shape)
    span = vertices.max(axis=0) - vertices.min(axis=0)
    size = np.array([image.shape[1], image.shape[0]]) * scale
    origin = (np.array([config.width, config.height]) - size - span) / 2 - vertices.min(axis=0)
    positions = origin + path + np.asarray(offset_px, dtype=np.float64)
    frames = np.empty((n_frames, config.height, config.width), dtype=np.float32)
    _render(image, positions, scale, config.background, frames)
    return frames, times


@njit(cache=True)
def _render(image, positions, scale, background, frames):
    """Bilinear sampling of `image` placed at `positions[i]` (top-left, canvas px) and scaled."""
    h, w = image.shape
    for i in range(frames.shape[0]):
        x0 = positions[i, 0]
        y0 = positions[i, 1]
        for y in range(frames.shape[1]):
            v = (y + 0.5 - y0) / scale - 0.5
            vi = np.int64(np.floor(v))
            fv = v - vi
            for x in range(frames.shape[2]):
                u = (x + 0.5 - x0) / scale - 0.5
                ui = np.int64(np.floor(u))
                fu = u - ui
                value = 0.0
                for dy in range(2):
                    yy = vi + dy
                    if yy < 0 or yy >= h:
                        continue
                    wy = fv if dy else 1.0 - fv
                    for dx in range(2):
                        xx = ui + dx
                        if 0 <= xx < w:
                            value += wy * (fu if dx else 1.0 - fu) * image[yy, xx]
                frames[i, y, x] = background + (1.0 - background) * value


def emulate_saccades(
    image: np.ndarray,
    saccades: SaccadeConfig | None = None,
    emulator: EmulatorConfig | None = None,
    seed: int | np.random.SeedSequence | np.random.Generator | None = 0,
    offset_px: tuple[float, float] = (0, 0),
) -> np.ndarray:
    """Events of a DVS watching `image` move along the saccades (N-MNIST style)."""
    frames, times = saccade_frames(image, saccades, offset_px)
    return emulate(frames, times, emulator, seed)
