"""Time our binning and denoise kernels against tonic and numpy on the same >= 10 M real events,
check that all of them produce identical results, and print throughput and ratios measured in the
same run.

    python tools/bench_binning.py [--json] [--repeat N] [--copies N] [--denoise-events N]

Events: the DAVIS346 AEDAT4 recording of ../shared (117,667 events, 130 ms) tiled `--copies` times
(default 86: 10.1 M events, 11.2 s), each copy shifted in time so timestamps keep increasing.

- binning, two settings: fixed 50 ms windows (224 frames) and 10 equal bins over the recording
  (the training layout). Ours is `frames_for_recording` (ingest validation, ring, output frames);
  tonic is `ToFrame`; numpy is one `np.bincount` per window over precomputed pixel indices. For
  the bins, ours gets tonic's span (n * (duration // n)) so the frames can be compared exactly.
- denoise: our `EventFilter(filter_us=10 ms)` against tonic `Denoise`. tonic filters in a Python
  loop (about 0.2 M events/s), so it runs on the first `--denoise-events` events (default 1 M);
  ours on the same events (compared exactly) and on all of them.
- file to windows: `windows(open_source(aedat4, loop=True), 10 ms float32 windows)` against
  draining the same `open_source` bare, both until `--copies` passes of the file went through;
  plus the windowing stage alone on the already decoded events, to show where the time goes.

Each measurement alternates ours and the baselines for `--repeat` samples; the table shows medians
(the machine is shared) and, beside them, ratios of the best samples.
Targets (issue 3): binning >= 20x tonic ToFrame and >= 3x np.bincount; denoise >= 100x tonic
Denoise; file to windows >= 0.8x bare decoding.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from spikecut.pipeline.binning import WindowSpec, frames_for_recording  # noqa: E402
from spikecut.pipeline.filters import EventFilter  # noqa: E402
from spikecut.pipeline.windowing import windows  # noqa: E402
from spikecut.sources import open_source, read_events  # noqa: E402

RECORDING = REPO.parent / "shared" / "data" / "real" / "aedat4" / "davis346_aestream_example.aedat4"
TARGETS = {
    "vs_tonic_to_frame": 20.0,
    "vs_bincount": 3.0,
    "vs_tonic_denoise": 100.0,
    "vs_decode": 0.8,
}


def tiled(events: np.ndarray, copies: int) -> np.ndarray:
    span = int(events["t"][-1]) - int(events["t"][0]) + 1
    out = np.concatenate([events] * copies)
    out["t"] += np.repeat(np.arange(copies, dtype=np.int64) * span, len(events))
    return out


def bincount_frames(events: np.ndarray, width: int, height: int, edges: np.ndarray) -> np.ndarray:
    """The numpy baseline: pixel indices once, then one bincount per [edges[k], edges[k+1])."""
    pixel = (events["p"].astype(np.int64) * height + events["y"]) * width + events["x"]
    bounds = np.searchsorted(events["t"], edges)
    frames = np.empty((len(edges) - 1, 2, height, width), dtype=np.int64)
    for k in range(len(edges) - 1):
        counts = np.bincount(pixel[bounds[k] : bounds[k + 1]], minlength=2 * height * width)
        frames[k] = counts.reshape(2, height, width)
    return frames


def samples(functions: dict[str, Callable[[], object]], repeat: int) -> dict[str, list[float]]:
    """Alternate the functions `repeat` times; seconds per call."""
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeat):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return times


def summarise(times: dict[str, list[float]], n_events: int, ours: str = "ours") -> dict:
    out = {}
    for name, values in times.items():
        out[name] = {
            "median_s": statistics.median(values),
            "best_s": min(values),
            "events_per_s": n_events / statistics.median(values),
        }
    for name, values in times.items():
        if name != ours:
            out[name]["ours_speedup_median"] = statistics.median(values) / statistics.median(
                times[ours]
            )
            out[name]["ours_speedup_best"] = min(values) / min(times[ours])
    return out


def bench_binning(events: np.ndarray, width: int, height: int, repeat: int) -> dict:
    import tonic.transforms as tonic_transforms

    results = {}
    t0, t_last = int(events["t"][0]), int(events["t"][-1])
    sensor = (width, height, 2)

    window = 50_000
    spec = WindowSpec(window_us=window, dtype="int16")
    to_frame = tonic_transforms.ToFrame(sensor_size=sensor, time_window=window)
    n_windows = (t_last - t0 - window) // window + 1
    edges = t0 + window * np.arange(n_windows + 1)
    functions = {
        "ours": lambda: frames_for_recording(events, (width, height), spec, end="drop"),
        "tonic ToFrame": lambda: to_frame(events),
        "np.bincount": lambda: bincount_frames(events, width, height, edges),
    }
    ours, theirs, numpy = (f() for f in functions.values())
    assert ours.shape == theirs.shape == numpy.shape, (ours.shape, theirs.shape, numpy.shape)
    assert np.array_equal(ours, theirs) and np.array_equal(ours, numpy), "frames differ"
    results["binning 50 ms windows"] = summarise(samples(functions, repeat), len(events))
    results["binning 50 ms windows"]["frames"] = list(ours.shape)
    del ours, theirs, numpy

    n_bins = 10
    width_us = (t_last - t0) // n_bins
    spec = WindowSpec(n_bins=n_bins, span_us=n_bins * width_us, dtype="int16")
    to_frame = tonic_transforms.ToFrame(sensor_size=sensor, n_time_bins=n_bins)
    edges = t0 + width_us * np.arange(n_bins + 1)
    functions = {
        "ours": lambda: frames_for_recording(events, (width, height), spec),
        "tonic ToFrame": lambda: to_frame(events),
        "np.bincount": lambda: bincount_frames(events, width, height, edges),
    }
    ours, theirs, numpy = (f() for f in functions.values())
    assert np.array_equal(ours, theirs) and np.array_equal(ours, numpy), "frames differ"
    results["binning 10 bins"] = summarise(samples(functions, repeat), len(events))
    results["binning 10 bins"]["frames"] = list(ours.shape)
    return results


def bench_denoise(events: np.ndarray, width: int, height: int, repeat: int, n_tonic: int) -> dict:
    import tonic.transforms as tonic_transforms

    filter_us = 10_000
    head = events[:n_tonic]
    denoise = tonic_transforms.Denoise(filter_time=filter_us)
    ours_kept = EventFilter((width, height), filter_us=filter_us)(head)
    theirs_kept = denoise(head)
    assert np.array_equal(ours_kept, theirs_kept), "denoised events differ"
    functions = {
        "ours": lambda: EventFilter((width, height), filter_us=filter_us)(head),
        "tonic Denoise": lambda: denoise(head),
    }
    result = summarise(samples(functions, max(1, repeat // 2)), len(head))
    result["events"] = len(head)
    result["kept"] = len(ours_kept)
    whole = samples(
        {"ours": lambda: EventFilter((width, height), filter_us=filter_us)(events)}, repeat
    )
    result["ours on all events"] = summarise(whole, len(events))["ours"]
    spec = WindowSpec(window_us=50_000, filter_us=filter_us, dtype="int16")
    fused = samples({"ours": lambda: frames_for_recording(events, (width, height), spec)}, repeat)
    result["ours binning 50 ms + denoise"] = summarise(fused, len(events))["ours"]
    return result


async def _drain_source(copies: int) -> int:
    n = 0
    async with open_source(RECORDING, loop=True) as source:
        async for chunk in source:
            n += len(chunk)
            if n >= copies * 117_667:
                return n
    return n


async def _drain_windows(source, copies: int) -> int:
    n = 0
    async with source:
        async for window in windows(source, WindowSpec(window_us=10_000)):
            n += window.n_events
            if n >= copies * 117_667:
                return n
    return n


class _DecodedSource:
    """The same events, already decoded, as an EventSource: the stage's own cost."""

    live = False

    def __init__(self, chunks: list[np.ndarray], info) -> None:
        self.chunks, self.info = chunks, info

    async def __aenter__(self) -> _DecodedSource:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    def __aiter__(self):
        return self._chunks()

    async def _chunks(self):
        for chunk in self.chunks:
            yield chunk


def bench_file_to_windows(events: np.ndarray, info, copies: int, repeat: int) -> dict:
    n_events = asyncio.run(_drain_source(copies))
    chunks = [events[i : i + 65_536].copy() for i in range(0, len(events), 65_536)]
    functions = {
        "ours": lambda: asyncio.run(_drain_windows(open_source(RECORDING, loop=True), copies)),
        "bare decoding": lambda: asyncio.run(_drain_source(copies)),
    }
    result = summarise(samples(functions, repeat), n_events)
    alone = samples(
        {"ours": lambda: asyncio.run(_drain_windows(_DecodedSource(chunks, info), copies))},
        repeat,
    )
    result["windowing stage alone (decoded chunks)"] = summarise(alone, len(events))["ours"]
    result["events"] = n_events
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--repeat", type=int, default=5, help="samples per measurement")
    parser.add_argument("--copies", type=int, default=86, help="times the recording is tiled")
    parser.add_argument(
        "--denoise-events", type=int, default=1_000_000, help="events given to tonic Denoise"
    )
    args = parser.parse_args()

    base, info = read_events(RECORDING)
    events = tiled(base, args.copies)
    width, height = info.width, info.height
    frames_for_recording(events[:1000], info, WindowSpec(window_us=1000, dtype="int16"))  # compile

    report = {
        "events": len(events),
        "sensor": [width, height],
        "binning": bench_binning(events, width, height, args.repeat),
        "denoise": bench_denoise(events, width, height, args.repeat, args.denoise_events),
        "file_to_windows": bench_file_to_windows(events, info, args.copies, args.repeat),
    }
    binning = report["binning"]
    ratios = {
        "vs_tonic_to_frame": min(
            b["tonic ToFrame"]["ours_speedup_median"] for b in binning.values()
        ),
        "vs_bincount": min(b["np.bincount"]["ours_speedup_median"] for b in binning.values()),
        "vs_tonic_denoise": report["denoise"]["tonic Denoise"]["ours_speedup_median"],
        "vs_decode": report["file_to_windows"]["bare decoding"]["ours_speedup_median"],
    }
    report["ratios"] = ratios
    report["targets"] = TARGETS
    report["met"] = {name: ratios[name] >= TARGETS[name] for name in TARGETS}
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"{len(events):,} events, sensor {width}x{height}, medians of {args.repeat} samples")
    sections = [(f"binning: {k}", v) for k, v in binning.items()]
    sections += [(f"denoise (first {report['denoise']['events']} events)", report["denoise"])]
    sections += [("file to windows (AEDAT4, 10 ms windows)", report["file_to_windows"])]
    for title, section in sections:
        print(f"\n{title}")
        for name, row in section.items():
            if not isinstance(row, dict):
                continue
            line = f"  {name:<30} {row['events_per_s'] / 1e6:9.1f} Mev/s"
            if "ours_speedup_median" in row:
                line += (
                    f"   ours is {row['ours_speedup_median']:6.1f}x faster "
                    f"(best samples {row['ours_speedup_best']:.1f}x)"
                )
            print(line)
    print("\nratios (worst setting)  target  met")
    for name, value in ratios.items():
        print(f"  {name:<20} {value:8.2f}  {TARGETS[name]:6.1f}  {report['met'][name]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
