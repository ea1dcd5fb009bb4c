"""Helpers for the pipeline tests: a small real checkpoint, the offline reference decision,
recordings written to disk for replay, and plain decisions for the sink tests."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from spikecut.models import (
    CheckpointConfig,
    TopKRule,
    build_model,
    cumulative,
    fold_batchnorm,
    load_checkpoint,
    save_checkpoint,
    topk_gap,
)
from spikecut.pipeline.binning import WindowSpec, frames_for_recording
from spikecut.pipeline.decision import Decision
from spikecut.sources import read_events

T = 10
WINDOW_US = 30_000
CLASSES = [str(d) for d in range(10)]


def padded_frames(events: np.ndarray, info, spec: WindowSpec, timesteps: int) -> np.ndarray:
    """The offline frames of one recording: its first T windows, empty windows after its end."""
    frames = frames_for_recording(events, info, spec)[:timesteps]
    missing = timesteps - frames.shape[0]
    if missing > 0:
        frames = np.concatenate([frames, np.zeros((missing, *frames.shape[1:]), frames.dtype)])
    return frames


def cumulative_outputs(net, frames: list[np.ndarray]) -> torch.Tensor:
    """Y(t) [T, N, classes] of the multi-step network over recordings' frames [T, P, H, W]."""
    batch = torch.from_numpy(np.stack(frames, axis=1)).float()
    with torch.no_grad():
        return cumulative(net.eval()(batch))


def make_checkpoint(
    directory: Path, recordings: list[Path], *, windowing: dict | None = None, seed: int = 0
) -> Path:
    """A real checkpoint of the small 34x34 net (random weights) whose Top-K thresholds lie
    between the gaps the given recordings produce, so that some stop early and some run to T,
    each with a margin far above float rounding."""
    torch.manual_seed(seed)
    net = build_model("nmnist_small")
    spec = WindowSpec.from_dict(windowing or {"window_us": WINDOW_US})
    frames = []
    for path in recordings:
        events, info = read_events(path)
        frames.append(padded_frames(events, info, spec, T))
    gaps = topk_gap(cumulative_outputs(fold_batchnorm(net), frames)).double()  # [T, N]
    beta = []
    for t in range(T):
        ordered = torch.sort(gaps[t]).values
        k = int(0.7 * (ordered.numel() - 1))
        beta.append(float((ordered[k] + ordered[k + 1]) / 2))
    config = CheckpointConfig(
        timesteps=T,
        class_names=CLASSES,
        sensor_size=(34, 34),
        windowing=spec.to_dict(),
        cutoff=TopKRule(beta, epsilon=0.0).to_dict(),
    )
    return save_checkpoint(directory, net, config)


@dataclass
class Offline:
    label: int
    steps: int
    gap: float
    exit: str


def offline_decisions(checkpoint: Path, recordings: list[Path]) -> list[Offline]:
    """The offline evaluation of the same checkpoint: frames_for_recording, multi-step network,
    `rule.stop_steps`."""
    net, config = load_checkpoint(checkpoint)
    spec = WindowSpec.from_dict(config.windowing)
    rule = config.cutoff_rule()
    frames = []
    for path in recordings:
        events, info = read_events(path)
        frames.append(padded_frames(events, info, spec, config.timesteps))
    y = cumulative_outputs(net, frames)
    stops = rule.stop_steps(y)
    gaps = topk_gap(y)
    results = []
    for n, stop in enumerate(stops.tolist()):
        crossed = bool(gaps[stop - 1, n] > rule.beta[stop - 1])
        results.append(
            Offline(
                label=int(y[stop - 1, n].argmax()),
                steps=stop,
                gap=float(gaps[stop - 1, n]),
                exit="cutoff" if crossed else "forced",
            )
        )
    return results


def offline_fixed_segments(checkpoint: Path, events: np.ndarray, info) -> list[Offline]:
    """Fixed segmentation evaluated offline: frame the whole stream once, then run the multi-step
    network on T-window segments, each starting at the window after the previous stop; the last,
    shorter segment is decided (forced) at its last window."""
    net, config = load_checkpoint(checkpoint)
    spec = WindowSpec.from_dict(config.windowing)
    rule = config.cutoff_rule()
    frames = frames_for_recording(events, info, spec)
    results, start = [], 0
    while start < frames.shape[0]:
        segment = frames[start : start + config.timesteps]
        y = cumulative_outputs(net, [segment])
        gaps = topk_gap(y)
        if segment.shape[0] == config.timesteps:
            stop = int(rule.stop_steps(y)[0])
            crossed = bool(gaps[stop - 1, 0] > rule.beta[stop - 1])
        else:  # the stream ended mid-segment: earlier stops still count
            stop = segment.shape[0]
            for t in range(1, segment.shape[0] + 1):
                if gaps[t - 1, 0] > rule.beta[t - 1]:
                    stop = t
                    break
            crossed = bool(gaps[stop - 1, 0] > rule.beta[stop - 1])
        results.append(
            Offline(
                int(y[stop - 1, 0].argmax()),
                stop,
                float(gaps[stop - 1, 0]),
                "cutoff" if crossed else "forced",
            )
        )
        start += stop
    return results


def concatenate(recordings: list[np.ndarray], *, gap_us: int, align_us: int | None = None):
    """One stream of several recordings, one after another: each shifted to start `gap_us` after
    the previous one ends (rounded up to a multiple of `align_us` from the first event when
    given). Returns the events and each recording's start time in the stream."""
    parts, starts, t_next = [], [], None
    origin = int(recordings[0]["t"][0])
    for events in recordings:
        events = events.copy()
        first = int(events["t"][0])
        if t_next is None:
            start = first
        else:
            start = t_next
            if align_us:
                start = origin + -(-(start - origin) // align_us) * align_us
        events["t"] += start - first
        parts.append(events)
        starts.append(start)
        t_next = int(events["t"][-1]) + gap_us
    return np.concatenate(parts), starts


def make_decision(seq: int = 0, stream: str = "cam0", **changes) -> Decision:
    """A valid decision numbered `seq` (a forced exit at T unless `changes` say otherwise)."""
    fields = dict(
        stream=stream,
        seq=seq,
        label=seq % 10,
        label_name=str(seq % 10),
        gap=3.0,
        threshold=None,
        exit="forced",
        timesteps=8,
        max_timesteps=8,
        segment_start_us=seq * 1000,
        segment_end_us=seq * 1000 + 800,
        events=100 + seq,
        synops=1e4,
        model="test-model",
        window_closed_ns=time.monotonic_ns(),
    )
    fields.update(changes)
    return Decision(**fields)
