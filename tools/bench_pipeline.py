"""Pipeline benchmark: input throughput with the SNN attached, decision latency, and the wall-clock
time the cutoff saves per segment. Everything is measured in one run, on one core by default.

Input, all real recordings (../shared):

- "dense 34x34": the 1000 N-MNIST recordings of nmnist_1k overlaid in time (each shifted to start
  at 0, merged in time order), repeated `--repeats` times back to back. It is a real 34x34 event
  stream at about 13 Mev/s of sensor time, above a DAVIS346's peak of 12 Mev/s, so the network
  (34x34 input) decides on it directly with the model's own windows.
- "cropped 640x480": Prophesee sparklers (EVT 2.0, 640x480), looped, cropped and downsampled into
  34x34 by the WindowSpec (`roi`, `downsample`): the other way of feeding a big sensor to the net.
- "segments": nmnist_1k files replayed one after another as a single stream in `recording` mode
  (the dataset case), once with the cutoff and once with the same model forced to T steps; for a
  model trained on emulated digits also its own (synthetic) test split, where it stops earlier.

Throughput (Mev/s, events per wall second, full speed, file replay): reading alone (baseline),
reading + windowing, and the whole pipeline (windowing + stepwise SNN + cutoff + decisions to a
JSON-lines sink), each on the same file in this run. "keeps up" means the pipeline's rate is at
least the stream's own sensor rate and 12 Mev/s.

Latency: the decisions' `latency_ms` (deciding window closed -> decision handed to the sink) in
real-time replays (`speed=1`) of the dense stream (`--latency-repeats` copies) and of
`--latency-digits` N-MNIST recordings back to back (a natural stream), with the steps where the
runner puts them by default and in worker threads; and at full speed, where windows queue up
behind each other. Target: p99 below one window plus one SNN step.

Cutoff saving: wall time per segment (first window taken -> decision published) with the cutoff vs
forced to T, alternating over groups of files; their ratio against the timestep reduction factor
T / mean timesteps, for both step placements.

    python tools/bench_pipeline.py [--model CKPT] [--json] [--cores 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SPIKECUT_SHARED", REPO.parent / "shared"))
DAVIS346_PEAK_MEVS = 12.0


def pin_to_cores(count: int) -> list[int]:
    """Restrict this process (and every thread it starts later) to `count` CPUs."""
    allowed = sorted(os.sched_getaffinity(0))
    chosen = allowed[:count]
    os.sched_setaffinity(0, chosen)
    return chosen


def dense_stream(folder: Path, repeats: int):
    """The nmnist_1k recordings overlaid in time, `repeats` times back to back."""
    import numpy as np

    from spikecut.sources import read_events

    parts = []
    for path in sorted(folder.glob("*.bin")):
        events, _ = read_events(path)
        events["t"] -= events["t"][0]
        parts.append(events)
    one = np.concatenate(parts)
    one = one[np.argsort(one["t"], kind="stable")]
    span = int(one["t"][-1]) + 1
    copies = []
    for k in range(repeats):
        copy = one.copy()
        copy["t"] += k * span
        copies.append(copy)
    return np.concatenate(copies), len(parts)


def percentiles(values: list[float]) -> dict[str, float | None]:
    from spikecut.pipeline.decision import percentile

    return {"p50": percentile(values, 50), "p99": percentile(values, 99), "n": len(values)}


async def read_rate(path: Path, **open_options) -> tuple[float, int]:
    from spikecut.sources import open_source

    events = 0
    start = time.perf_counter()
    async with open_source(path, **open_options) as source:
        async for chunk in source:
            events += chunk.size
    return time.perf_counter() - start, events


async def windowing_rate(path: Path, spec, **open_options) -> tuple[float, int]:
    from spikecut.pipeline.windowing import windows
    from spikecut.sources import open_source

    events = 0
    start = time.perf_counter()
    async with open_source(path, **open_options) as source:
        async for window in windows(source, spec):
            events += window.n_events
    return time.perf_counter() - start, events


async def pipeline_run(model, sources, options) -> tuple[float, list, list]:
    """Run one stream through the runner into a JSON-lines sink on /dev/null."""
    from spikecut.pipeline.runner import Runner, Stream
    from spikecut.pipeline.sinks import JsonlSink

    infos = []
    start = time.perf_counter()
    async with JsonlSink(os.devnull) as sink:
        runner = Runner(model, sink, options, on_decision=lambda d, info: infos.append(info))
        (report,) = await runner.run([Stream("bench", sources)])
    wall = time.perf_counter() - start
    if report.error:
        raise SystemExit(f"bench_pipeline: the stream failed: {report.error}")
    return wall, [report], infos


def step_time_us(model, frames, calls: int = 300) -> float:
    """Median time of one single-step call (with the cutoff check), on a real frame."""
    state = model.init_state()
    for _ in range(20):
        result = model.step(frames, state)
        state = result.state if result.state.t < model.timesteps - 1 else model.init_state()
    times = []
    state = model.init_state()
    for _ in range(calls):
        start = time.perf_counter()
        result = model.step(frames, state)
        times.append(time.perf_counter() - start)
        state = result.state if result.state.t < model.timesteps - 1 else model.init_state()
    return statistics.median(times) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="checkpoint directory (default: the embedded demo model)")
    parser.add_argument("--nmnist", type=Path, default=SHARED / "data" / "nmnist_1k" / "train")
    parser.add_argument(
        "--sparklers",
        type=Path,
        default=SHARED / "data" / "real" / "prophesee_raw" / "evt2_gen3_sparklers.raw",
    )
    parser.add_argument("--repeats", type=int, default=3, help="copies of the dense stream")
    parser.add_argument(
        "--latency-repeats", type=int, default=6, help="copies of the dense stream, real time"
    )
    parser.add_argument(
        "--latency-digits", type=int, default=20, help="N-MNIST recordings, real time"
    )
    parser.add_argument("--loops", type=int, default=20, help="passes over the sparklers file")
    parser.add_argument("--segments", type=int, default=300, help="recordings for cutoff vs T")
    parser.add_argument("--rounds", type=int, default=6, help="alternations of cutoff/forced")
    parser.add_argument(
        "--emulated",
        type=int,
        default=179,
        help="emulated test digits for cutoff vs T too (a model trained on them; 0: skip)",
    )
    parser.add_argument("--cores", type=int, default=1, help="CPUs to run on (default 1)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    for path in (args.nmnist, args.sparklers):
        if not path.exists():
            raise SystemExit(f"bench_pipeline: {path} is missing (real recordings in ../shared)")
    cores = pin_to_cores(args.cores)
    sys.path.insert(0, str(REPO))

    import numpy as np

    from spikecut.pipeline.binning import bin_recording
    from spikecut.pipeline.runner import (
        INLINE_STEP_MAX_S,
        Runner,
        RunOptions,
        Segmentation,
        StreamModel,
        configure_torch,
    )
    from spikecut.pipeline.sinks import StdoutSink
    from spikecut.sources import open_source, read_events, write_events
    from spikecut.sources.events import StreamInfo

    configure_torch(1)
    model = StreamModel.load(args.model)
    spec = model.spec
    window_ms = spec.window_us / 1000 if spec.window_us else None
    default_in_thread = Runner(model, StdoutSink()).steps_in_thread
    placements = {"default": None, "threads": True}
    out: dict = {
        "cores": cores,
        "model": model.model_id,
        "timesteps": model.timesteps,
        "window_ms": window_ms,
        "step_us_at_load": model.step_time_s * 1e6,
        "default_steps": "threads" if default_in_thread else "inline",
        "inline_below_us": INLINE_STEP_MAX_S * 1e6,
    }

    def fixed(cutoff: bool = True, in_thread: bool | None = None) -> RunOptions:
        return RunOptions(
            segmentation=Segmentation("fixed"),
            cutoff=cutoff,
            step_in_thread=in_thread,
            stats_interval_s=None,
        )

    with tempfile.TemporaryDirectory(prefix="spikecut-bench-") as folder:
        # --- throughput on the dense 34x34 stream ------------------------------------------------
        events, recordings = dense_stream(args.nmnist, args.repeats)
        # EVT 3.0, what Prophesee cameras record (and one of our fastest decoders)
        dense = Path(folder) / "dense.raw"
        write_events(dense, events, StreamInfo(34, 34, "nmnist overlay"))
        sensor_s = (int(events["t"][-1]) - int(events["t"][0]) + 1) / 1e6
        n = int(events.size)
        frame = np.ascontiguousarray(
            bin_recording(events[:200_000], (34, 34), spec).frames[0], dtype=np.float32
        )
        out["step_us"] = step_time_us(model, frame)
        del events

        asyncio.run(read_rate(dense))  # warm the caches and the JIT
        read_s, read_n = asyncio.run(read_rate(dense))
        win_s, _ = asyncio.run(windowing_rate(dense, spec))
        assert read_n == n
        runs = {}
        for name, options in (
            ("default", fixed()),
            ("threads", fixed(in_thread=True)),
            ("forced_T", fixed(cutoff=False)),
        ):
            wall, (report,), _ = asyncio.run(pipeline_run(model, [open_source(dense)], options))
            runs[name] = (wall, report)
        pipe_s, report = runs["default"]
        out["dense"] = {
            "recordings_overlaid": recordings,
            "repeats": args.repeats,
            "events": n,
            "sensor_s": sensor_s,
            "sensor_rate_mevs": n / sensor_s / 1e6,
            "read_mevs": n / read_s / 1e6,
            "windowing_mevs": n / win_s / 1e6,
            "pipeline_mevs": n / pipe_s / 1e6,
            "pipeline_threads_mevs": n / runs["threads"][0] / 1e6,
            "pipeline_forced_T_mevs": n / runs["forced_T"][0] / 1e6,
            "pipeline_vs_windowing": win_s / pipe_s,
            "windows": report.windows,
            "steps": report.steps,
            "decisions": report.decisions,
            "latency_full_speed_ms": percentiles(report.latencies_ms),
            "realtime_factor": sensor_s / pipe_s,
        }
        out["dense"]["keeps_up"] = out["dense"]["pipeline_mevs"] >= max(
            DAVIS346_PEAK_MEVS, out["dense"]["sensor_rate_mevs"]
        )

        # --- latency in real time ----------------------------------------------------------------
        events, _ = dense_stream(args.nmnist, args.latency_repeats)
        long_dense = Path(folder) / "dense-long.raw"
        write_events(long_dense, events, StreamInfo(34, 34, "nmnist overlay"))
        del events
        files = sorted(args.nmnist.glob("*.bin"))
        digits_events = [read_events(p)[0] for p in files[: args.latency_digits]]
        digits = Path(folder) / "digits.raw"
        write_events(digits, _back_to_back(digits_events), StreamInfo(34, 34, "digits"))
        out["latency_realtime"] = {}
        for stream_name, path in (("dense", long_dense), ("digits", digits)):
            for placement, in_thread in placements.items():
                options = fixed(in_thread=in_thread)
                source = open_source(path, speed=1.0)
                _, (paced,), _ = asyncio.run(pipeline_run(model, [source], options))
                out["latency_realtime"][f"{stream_name}_{placement}"] = percentiles(
                    paced.latencies_ms
                )
        if window_ms is not None:
            target_ms = window_ms + out["step_us"] / 1000
            worst = max(v["p99"] for v in out["latency_realtime"].values() if v["n"])
            out["latency_target_ms"] = target_ms
            out["latency_meets_target"] = worst < target_ms

        # --- a big sensor cropped into 34x34 -----------------------------------------------------
        sparklers, _ = read_events(args.sparklers)
        fit = spec.with_(roi=(82, 2, 476, 476), downsample=14)
        cropped = StreamModel(model.net, model.config, window_overrides={
            "roi": fit.roi, "downsample": fit.downsample})  # fmt: skip
        asyncio.run(windowing_rate(args.sparklers, fit))
        win_s, _ = asyncio.run(windowing_rate(args.sparklers, fit))
        crop_s, (crop_report,), _ = asyncio.run(
            pipeline_run(cropped, [_Passes(open_source(args.sparklers, loop=True), args.loops)],
                         fixed())
        )  # fmt: skip
        t = sparklers["t"]
        out["cropped_640x480"] = {
            "file": args.sparklers.name,
            "roi": list(fit.roi),
            "downsample": fit.downsample,
            "sensor_rate_mevs": sparklers.size / (int(t[-1] - t[0]) + 1),
            "windowing_mevs": sparklers.size / win_s / 1e6,
            "pipeline_mevs": sparklers.size * args.loops / crop_s / 1e6,
            "decisions": crop_report.decisions,
        }
        del sparklers, t

        # --- cutoff vs forced to T, per segment --------------------------------------------------
        files = files[: args.segments]

        def recording(cutoff: bool, in_thread: bool | None) -> RunOptions:
            return RunOptions(
                segmentation=Segmentation("recording"),
                cutoff=cutoff,
                step_in_thread=in_thread,
                stats_interval_s=None,
            )

        asyncio.run(
            pipeline_run(model, [open_source(p) for p in files[:20]], recording(True, None))
        )
        out["segments"] = {}
        for placement, in_thread in placements.items():
            modes = {"cutoff": recording(True, in_thread), "forced_T": recording(False, in_thread)}
            out["segments"][placement] = _cutoff_vs_forced(
                model, files, modes, args.rounds, pipeline_run, open_source
            )
        if args.emulated and model.config.extra.get("dataset") == "emulated-digits":
            # the model's own test split (synthetic): a larger timestep reduction
            from spikecut.pipeline.demo import demo_recordings

            emulated, _, info = demo_recordings(model, args.emulated)
            paths = []
            for i, events in enumerate(emulated):
                paths.append(Path(folder) / f"emulated{i:04d}.npz")
                write_events(paths[-1], events, info)
            modes = {"cutoff": recording(True, None), "forced_T": recording(False, None)}
            out["segments"]["default, emulated test split"] = _cutoff_vs_forced(
                model, paths, modes, args.rounds, pipeline_run, open_source
            )

    if args.json:
        print(json.dumps(out, indent=2))
        return
    report_text(out)


def _back_to_back(recordings: list, gap_us: int = 30_000):
    """Recordings one after another in one stream, `gap_us` apart."""
    import numpy as np

    parts, t_next = [], 0
    for events in recordings:
        events = events.copy()
        events["t"] += t_next - events["t"][0]
        parts.append(events)
        t_next = int(events["t"][-1]) + gap_us
    return np.concatenate(parts)


def _cutoff_vs_forced(model, files, modes, rounds, pipeline_run, open_source) -> dict:
    """Per-segment wall time of each mode; the modes alternate over `rounds` groups of files (in
    both orders), so a change in the machine's load during the run hits both alike."""
    import numpy as np

    walls: dict[str, list[float]] = {name: [] for name in modes}
    steps: dict[str, list[int]] = {name: [] for name in modes}
    totals = dict.fromkeys(modes, 0.0)
    for r in range(rounds):
        group = files[r::rounds]
        for name in list(modes)[:: 1 if r % 2 == 0 else -1]:
            wall, (rep,), infos = asyncio.run(
                pipeline_run(model, [open_source(p) for p in group], modes[name])
            )
            walls[name] += [info.wall_s for info in infos]
            steps[name] += rep.timesteps
            totals[name] += wall
    result: dict = {
        name: {
            "segments": len(walls[name]),
            "mean_timesteps": float(np.mean(steps[name])),
            "segment_ms_mean": 1000 * float(np.mean(walls[name])),
            "segment_ms_p50": 1000 * float(np.median(walls[name])),
            "total_s": totals[name],
        }
        for name in modes
    }
    reduction = model.timesteps / result["cutoff"]["mean_timesteps"]
    saving = result["forced_T"]["segment_ms_mean"] / result["cutoff"]["segment_ms_mean"]
    result.update(
        rounds=rounds,
        timestep_reduction=reduction,
        wall_saving_per_segment=saving,
        saving_over_reduction=saving / reduction,
        wall_saving_end_to_end=result["forced_T"]["total_s"] / result["cutoff"]["total_s"],
        meets_target=saving >= 0.9 * reduction,
    )
    return result


class _Passes:
    """A looping file source cut after `passes` passes (the looped file never ends itself)."""

    live = False

    def __init__(self, source, passes: int) -> None:
        self.source = source
        self.passes = passes

    @property
    def info(self):
        return self.source.info

    async def __aenter__(self):
        await self.source.__aenter__()
        return self

    async def __aexit__(self, *exc_info):
        await self.source.__aexit__(*exc_info)

    async def __aiter__(self):
        async for chunk in self.source:
            if self.source.passes >= self.passes:
                return
            yield chunk


def report_text(out: dict) -> None:
    d = out["dense"]
    print(
        f"model {out['model']}, T={out['timesteps']}, {out['window_ms']} ms windows; CPUs "
        f"{out['cores']}; one SNN step {out['step_us']:.0f} µs in a tight loop; steps run "
        f"{out['default_steps']} by default (inline below {out['inline_below_us']:.0f} µs)"
    )
    print(
        f"\ndense 34x34 stream: {d['events'] / 1e6:.1f} M real events in {d['sensor_s']:.2f} s "
        f"of sensor time ({d['sensor_rate_mevs']:.1f} Mev/s; {d['recordings_overlaid']} N-MNIST "
        f"recordings overlaid, x{d['repeats']}), full speed"
    )
    print(f"  read only (baseline)           {d['read_mevs']:7.1f} Mev/s")
    print(f"  read + windowing               {d['windowing_mevs']:7.1f} Mev/s")
    print(
        f"  whole pipeline (SNN, cutoff)   {d['pipeline_mevs']:7.1f} Mev/s  "
        f"x{d['pipeline_vs_windowing']:.2f} of windowing alone; {d['realtime_factor']:.1f}x "
        f"real time; {d['steps']} steps, {d['decisions']} decisions"
    )
    print(f"  ... steps in threads           {d['pipeline_threads_mevs']:7.1f} Mev/s")
    print(f"  ... forced to T                {d['pipeline_forced_T_mevs']:7.1f} Mev/s")
    print(
        f"  keeps up with >= {DAVIS346_PEAK_MEVS:g} Mev/s (and the stream's own rate): "
        f"{'yes' if d['keeps_up'] else 'NO'}"
    )
    print("\nlatency (deciding window closed -> decision handed to the sink), real-time replay:")
    for name, lat in out["latency_realtime"].items():
        if lat["n"]:
            print(f"  {name:16} p50 {lat['p50']:6.2f} ms  p99 {lat['p99']:6.2f} ms  ({lat['n']})")
    full = d["latency_full_speed_ms"]
    print(
        f"  dense, full speed (windows queue up): p50 {full['p50']:.2f} ms, "
        f"p99 {full['p99']:.2f} ms"
    )
    if "latency_target_ms" in out:
        print(
            f"  target p99 < one window + one step = {out['latency_target_ms']:.2f} ms: "
            f"{'yes' if out['latency_meets_target'] else 'NO'}"
        )
    c = out["cropped_640x480"]
    print(
        f"\n{c['file']} cropped {c['roi']} and downsampled x{c['downsample']} into 34x34 "
        f"({c['sensor_rate_mevs']:.1f} Mev/s sensor rate): windowing {c['windowing_mevs']:.1f} "
        f"Mev/s, whole pipeline {c['pipeline_mevs']:.1f} Mev/s"
    )
    for placement, s in out["segments"].items():
        cut, forced = s["cutoff"], s["forced_T"]
        what = "emulated digits" if "emulated" in placement else "N-MNIST recordings"
        print(
            f"\nper segment, steps {placement}: {cut['segments']} {what} one after another "
            f"(recording mode, {s['rounds']} alternating rounds)"
        )
        for name, run in (("cutoff", cut), ("forced to T", forced)):
            print(
                f"  {name:12} mean {run['mean_timesteps']:5.2f} timesteps, "
                f"{run['segment_ms_mean']:.3f} ms per segment, {run['total_s']:.2f} s in all"
            )
        print(
            f"  timestep reduction x{s['timestep_reduction']:.2f}; wall-clock saving per segment "
            f"x{s['wall_saving_per_segment']:.2f} = {s['saving_over_reduction']:.2f} of the "
            f"reduction (target >= 0.9: {'yes' if s['meets_target'] else 'NO'}); end to end, "
            f"files included, x{s['wall_saving_end_to_end']:.2f}"
        )


if __name__ == "__main__":
    main()
