"""Frames for training and evaluation, made exactly as the streaming pipeline makes them.

The checkpoint stores a `WindowSpec` (`CheckpointConfig.windowing`) and the number of timesteps T.
A sample's frames are the first T windows `frames_for_recording` makes from its events with that
spec, the same `FrameBuilder` the async windowing stage runs, so a stream replayed through
`windows(source, spec)` feeds the network, one window per step, exactly the frames it was trained
and calibrated on. A recording with fewer than T windows is padded with empty frames.

`dataset_window_spec` picks the spec for a dataset preset: T fixed windows of `span_us / T` from
the first event where the preset fixes a span (N-MNIST, emulated digits, DVS128 Gesture), which a
live stream can reproduce, else the paper's T equal bins over each recording's own duration (only
possible offline). `frame_set` bins a whole split once into memory; `lazy_frames` bins on demand
for datasets too large for that. Training augmentation is the datasets' `RandomTranslate` on
frames (`augment_batch`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch import Tensor

from spikecut.errors import ConfigError
from spikecut.pipeline.binning import WindowSpec, frames_for_recording
from spikecut.sources.datasets import (
    DatasetPreset,
    EventDataset,
    FramesDataset,
    RandomTranslate,
    Splits,
    load_splits,
)
from spikecut.sources.events import StreamInfo


def dataset_splits(
    dataset: str,
    root: str | None,
    *,
    seed: int,
    validation: float,
    test: float,
    limit: int | None = None,
) -> Splits:
    """`load_splits` (stratified where the dataset has no fixed test set), cut to the first
    `limit` samples of each split if set."""
    splits = load_splits(dataset, root, seed=seed, validation=validation, test=test)
    if limit is None:
        return splits
    n = int(limit)
    return Splits(
        splits.train.subset(range(min(n, len(splits.train)))),
        splits.validation.subset(range(min(n, len(splits.validation)))),
        splits.test.subset(range(min(n, len(splits.test)))),
        splits.preset,
        f"{splits.description}; first {n} of each split",
    )


def dataset_window_spec(
    preset: DatasetPreset, timesteps: int, *, window_us: int | None = None
) -> WindowSpec:
    """The window spec a preset trains with: `window_us` if given, else `span_us // timesteps`
    where the preset fixes a span, else `n_bins=timesteps` over each recording's own span."""
    if timesteps < 1:
        raise ConfigError(f"timesteps={timesteps!r}: must be >= 1")
    if window_us is None and preset.span_us is not None:
        window_us = preset.span_us // timesteps
    if window_us is None:
        return WindowSpec(n_bins=timesteps)
    return WindowSpec(window_us=int(window_us))


def sample_frames(
    events: np.ndarray, sensor: StreamInfo | tuple[int, ...], spec: WindowSpec, timesteps: int
) -> np.ndarray:
    """The first `timesteps` windows of one recording as float32 [T, P, H, W] (zero-padded)."""
    frames = frames_for_recording(events, sensor, spec)[:timesteps]
    if frames.shape[0] < timesteps:
        pad = np.zeros((timesteps - frames.shape[0], *frames.shape[1:]), dtype=frames.dtype)
        frames = np.concatenate([frames, pad])
    return np.ascontiguousarray(frames, dtype=np.float32)


@dataclass
class FrameSet:
    """A whole split binned once: frames [N, T, P, H, W] (stored compactly, exact counts) and
    labels [N]. Indexing gives float32 frames."""

    frames: Tensor
    labels: Tensor
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.frames[index].float(), int(self.labels[index])

    def batch(self, indices: Tensor | Sequence[int]) -> tuple[Tensor, Tensor]:
        """Frames [B, T, P, H, W] float32 and labels [B]."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.frames[idx].float(), self.labels[idx]

    def batches(self, batch_size: int) -> list[tuple[Tensor, Tensor]]:
        """Time-major batches (frames [T, B, P, H, W], labels) in order, for `collect_outputs`."""
        out = []
        for start in range(0, len(self), batch_size):
            frames, labels = self.batch(range(start, min(start + batch_size, len(self))))
            out.append((frames.transpose(0, 1), labels))
        return out


def _compact(frames: np.ndarray) -> Tensor:
    """Counts as uint8/int16 when every value fits exactly (4x/2x less memory), else float32."""
    if frames.size == 0 or not np.array_equal(frames, np.round(frames)):
        return torch.from_numpy(frames)
    for dtype in (np.uint8, np.int16):
        info = np.iinfo(dtype)
        if frames.min() >= info.min and frames.max() <= info.max:
            return torch.from_numpy(frames.astype(dtype))
    return torch.from_numpy(frames)


def frame_set(
    dataset: EventDataset, spec: WindowSpec, timesteps: int, *, progress: bool = False
) -> FrameSet:
    """Bin every sample of `dataset` into memory (see the module docstring)."""
    from tqdm.auto import tqdm

    n = len(dataset)
    frames: np.ndarray | None = None
    for i in tqdm(range(n), desc="binning", unit="rec", disable=not progress, leave=False):
        sample = sample_frames(dataset.load(i), dataset.info, spec, timesteps)
        if frames is None:
            frames = np.zeros((n, *sample.shape), dtype=np.float32)
        frames[i] = sample
    if frames is None:
        raise ConfigError(f"dataset {dataset.info.source!r} has no samples")
    labels = torch.as_tensor(np.asarray(dataset.labels), dtype=torch.long)
    return FrameSet(_compact(frames), labels, tuple(dataset.classes))


def lazy_frames(dataset: EventDataset, spec: WindowSpec, timesteps: int) -> FramesDataset:
    """Samples binned on demand (for DataLoader workers, datasets too big for memory):
    `(frames [T, P, H, W] float32, label)`, the same frames as `frame_set`."""
    return FramesDataset(dataset, partial(sample_frames, spec=spec, timesteps=timesteps))


def ordered_batches(
    data: FrameSet | FramesDataset, batch_size: int, workers: int = 0
) -> Iterator[tuple[Tensor, Tensor]]:
    """(frames [T, B, P, H, W], labels [B]) in dataset order, for evaluation and calibration."""
    if isinstance(data, FrameSet):
        yield from data.batches(batch_size)
        return
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, num_workers=workers)
    for frames, labels in loader:
        yield frames.transpose(0, 1), labels


def augment_batch(
    frames: Tensor,
    indices: Sequence[int],
    augment: RandomTranslate | None,
    seed: int,
    epoch: int,
) -> Tensor:
    """`augment` applied to each sample of frames [B, T, P, H, W] with a generator seeded from
    (seed, epoch, sample index), as `FramesDataset` does: a run gets the same shifts whatever the
    number of processes, workers or resumes."""
    if augment is None or augment.max_shift_px == 0:
        return frames
    out = [
        torch.from_numpy(augment(f.numpy(), np.random.default_rng([seed, epoch, int(i)])))
        for f, i in zip(frames, indices, strict=True)
    ]
    return torch.stack(out)
