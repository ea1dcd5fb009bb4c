"""The DVS emulator against the behaviour of a real DVS pixel, on tiny synthetic scenes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spikecut.errors import ConfigError, EventDataError
from spikecut.sources.emulator import (
    DVSEmulator,
    EmulatorConfig,
    SaccadeConfig,
    emulate,
    emulate_saccades,
    saccade_frames,
)
from spikecut.sources.events import EVENT_DTYPE, check_events

# No mismatch, and a negligible offset before the logarithm so log levels are exactly log(I).
EXACT = EmulatorConfig(threshold_on=0.2, threshold_off=0.2, threshold_sigma=0.0, log_eps=1e-12)


def ramp_scene(n_frames: int = 101, frame_us: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """8x8 pixels: the left half brightens 4x, the right half darkens 4x, linearly in log."""
    times = np.arange(n_frames, dtype=np.int64) * frame_us
    gain = np.exp(np.linspace(0.0, np.log(4.0), n_frames))
    frames = np.empty((n_frames, 8, 8))
    frames[:, :, :4] = 0.2 * gain[:, None, None]
    frames[:, :, 4:] = 0.8 / gain[:, None, None]
    return frames, times


def random_video(seed: int, n_frames: int = 60, h: int = 6, w: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    steps = rng.normal(0.0, 0.15, size=(n_frames, h, w))
    return np.clip(np.exp(np.cumsum(steps, axis=0)) * 0.3, 0.0, 1.0)


def per_pixel_times(events: np.ndarray, width: int) -> dict[int, np.ndarray]:
    pixel = events["y"].astype(np.int64) * width + events["x"]
    return {int(p): events["t"][pixel == p] for p in np.unique(pixel)}


def test_brightening_gives_on_events_and_darkening_off_events():
    frames, times = ramp_scene()
    events = emulate(frames, times, EXACT)
    check_events(events, 8, 8)
    left = events["x"] < 4
    assert events.dtype == EVENT_DTYPE
    assert np.all(events["p"][left] == 1) and np.all(events["p"][~left] == 0)
    # log(4) / 0.2 = 6.93 thresholds: 6 events per pixel in each half.
    assert np.sum(left) == np.sum(~left) == 6 * 32
    assert np.all(np.diff(events["t"]) >= 0)


def test_more_on_than_off_events_when_most_of_the_scene_brightens():
    rng = np.random.default_rng(3)
    base = rng.uniform(0.1, 0.5, size=(16, 16))
    direction = np.where(rng.random((16, 16)) < 0.75, 1.0, -1.0)  # a quarter darkens
    log_gain = np.linspace(0, 1.0, 50)[:, None, None] * direction
    frames = base * np.exp(log_gain) + rng.normal(0, 0.002, size=(50, 16, 16))
    events = emulate(np.clip(frames, 0, 1), np.arange(50) * 2000, EmulatorConfig(), seed=1)
    n_on = int(np.sum(events["p"] == 1))
    n_off = events.size - n_on
    assert n_on > 2 * n_off > 0
    brightening = direction[events["y"], events["x"]] > 0
    assert np.mean(events["p"][brightening]) > 0.95 and np.mean(events["p"][~brightening]) < 0.05


def test_a_large_step_gives_several_events_interpolated_across_the_interval():
    frames = np.full((2, 1, 1), 0.1)
    frames[1] = 0.1 * np.exp(1.1)  # +1.1 in log: five thresholds of 0.2 and a bit
    events = emulate(frames, np.array([0, 1000]), EXACT)
    assert events.size == 5
    assert np.all(events["p"] == 1)
    # Linear in log intensity: crossing k happens at 0.2 k / 1.1 of the interval.
    np.testing.assert_allclose(events["t"], [181, 363, 545, 727, 909], atol=1)


def test_refractory_period_is_respected_per_pixel():
    frames, times = ramp_scene(n_frames=11, frame_us=10_000)  # fast: 6 crossings in 100 ms
    free = emulate(frames, times, EXACT)
    config = EmulatorConfig(threshold_sigma=0.0, refractory_us=25_000, log_eps=1e-12)
    refractory = emulate(frames, times, config)
    assert refractory.size < free.size
    for pixel_times in per_pixel_times(refractory, 8).values():
        assert np.all(np.diff(pixel_times) >= 25_000)
    # A crossing takes 14.4 ms; the reference follows the input during the 25 ms reset, so each
    # pixel fires at 14.4, 53.8 and 93.3 ms (event times are whole µs).
    for pixel_times in per_pixel_times(refractory, 8).values():
        np.testing.assert_allclose(pixel_times, [14_426, 53_852, 93_278], atol=1)


def test_threshold_mismatch_has_the_configured_spread():
    emulator = DVSEmulator(64, 64, EmulatorConfig(threshold_on=0.3, threshold_sigma=0.04), seed=5)
    on, off = emulator.thresholds
    assert on.shape == off.shape == (64, 64)
    assert on.mean() == pytest.approx(0.3, abs=0.005)
    assert on.std() == pytest.approx(0.04, rel=0.1)
    assert not np.allclose(on, off)


def test_background_noise_rate_matches_the_configuration():
    rate_hz, width, height, seconds = 5.0, 32, 32, 20
    config = EmulatorConfig(noise_rate_hz=rate_hz, refractory_us=100)
    times = np.arange(0, seconds * 1_000_000 + 1, 50_000)
    frames = np.full((times.size, height, width), 0.5)
    events = emulate(frames, times, config, seed=11)
    expected = rate_hz * width * height * seconds
    assert abs(events.size - expected) < 4 * np.sqrt(expected)  # Poisson, 4 sigma
    assert np.mean(events["p"]) == pytest.approx(0.5, abs=0.03)
    counts = np.bincount(events["y"].astype(np.int64) * width + events["x"], minlength=1024)
    assert counts.std() == pytest.approx(np.sqrt(rate_hz * seconds), rel=0.15)
    check_events(events, width, height)


def test_same_seed_same_events_other_seed_other_events():
    frames = random_video(0)
    times = np.arange(frames.shape[0]) * 1000
    config = EmulatorConfig(noise_rate_hz=50.0, refractory_us=300)
    first = emulate(frames, times, config, seed=42)
    assert first.size > 100
    np.testing.assert_array_equal(first, emulate(frames, times, config, seed=42))
    assert not np.array_equal(first, emulate(frames, times, config, seed=43))


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    cuts=st.lists(st.integers(1, 59), max_size=5, unique=True),
    refractory_us=st.sampled_from([0, 700, 5000]),
)
def test_feeding_in_chunks_equals_feeding_everything_at_once(seed, cuts, refractory_us):
    frames = random_video(seed)
    times = np.cumsum(np.random.default_rng(seed).integers(100, 3000, frames.shape[0]))
    config = EmulatorConfig(noise_rate_hz=400.0, refractory_us=refractory_us, threshold_sigma=0.05)
    whole = emulate(frames, times, config, seed=seed)
    emulator = DVSEmulator(7, 6, config, seed=seed)
    bounds = [0, *sorted(cuts), frames.shape[0]]
    chunks = [
        emulator.feed(frames[a:b], times[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)
    ]
    np.testing.assert_array_equal(np.concatenate(chunks), whole)
    assert emulator.t_last_us == times[-1]


def test_rgb_frames_use_luminance():
    grey = random_video(1, n_frames=10)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    times = np.arange(10) * 1000
    np.testing.assert_array_equal(emulate(grey, times), emulate(rgb, times))
    grey8 = np.round(grey * 255).astype(np.uint8)
    np.testing.assert_array_equal(emulate(grey8, times), emulate(grey8 / 255.0, times))


def test_bad_input_is_refused_with_clear_errors():
    frames = np.full((3, 2, 2), 0.5)
    with pytest.raises(EventDataError, match="increase strictly: frame 2"):
        emulate(frames, np.array([0, 10, 10]))
    with pytest.raises(EventDataError, match="shape"):
        emulate(frames[0], np.array([0]))
    bad = frames.copy()
    bad[1, 0, 1] = np.nan
    with pytest.raises(EventDataError, match=r"frame 1 pixel \(x=1, y=0\)"):
        emulate(bad, np.array([0, 10, 20]))
    emulator = DVSEmulator(2, 2)
    emulator.feed(frames, np.array([0, 10, 20]))
    with pytest.raises(EventDataError, match="does not follow"):
        emulator.feed(frames, np.array([20, 30, 40]))
    with pytest.raises(EventDataError, match="3x2"):
        emulator.feed(np.zeros((1, 2, 3)), np.array([50]))
    with pytest.raises(ConfigError, match="threshold_on"):
        EmulatorConfig(threshold_on=0)
    with pytest.raises(ConfigError, match="dwell_us"):
        SaccadeConfig(dwell_us=100_000)


def test_saccade_frames_follow_the_triangle_and_return_home():
    grid = np.arange(8) - 3.5
    image = np.exp(-(grid[:, None] ** 2 + grid[None, :] ** 2) / 4)  # smooth, to avoid aliasing
    config = SaccadeConfig()
    frames, times = saccade_frames(image, config)
    assert frames.shape == (301, 34, 34) and times[-1] == 300_000
    assert np.all(np.diff(times) == 1000)
    np.testing.assert_allclose(frames[0], frames[-1], atol=1e-6)
    grid_y, grid_x = np.mgrid[:34, :34]

    def centre(frame):
        weight = frame - config.background
        return np.array([np.sum(weight * grid_x), np.sum(weight * grid_y)]) / np.sum(weight)

    # Still during the dwell, then at each vertex after its saccade.
    np.testing.assert_allclose(centre(frames[5]), centre(frames[0]), atol=1e-6)
    for k, vertex in enumerate([(2.0, 4.5), (5.0, 0.0), (0.0, 0.0)], start=1):
        np.testing.assert_allclose(centre(frames[100 * k]) - centre(frames[0]), vertex, atol=0.05)


def test_saccades_produce_three_bursts_of_events():
    image = np.zeros((8, 8))
    image[1:7, 3:5] = 1.0
    events = emulate_saccades(image, seed=0)
    counts, _ = np.histogram(events["t"], bins=30, range=(0, 300_000))
    bursts = counts.reshape(3, 10)
    # Each 100 ms saccade is busiest in its middle and quiet at its ends.
    assert np.all(
        bursts[:, 3:7].sum(axis=1) > 5 * (bursts[:, :1].sum(axis=1) + bursts[:, 9:].sum(1))
    )
