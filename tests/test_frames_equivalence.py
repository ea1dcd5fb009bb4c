"""The frames a stream feeds the network equal the frames it was trained on.

Training bins a recording with `frame_set` (through `frames_for_recording`) under the spec a
checkpoint stores; the runner replays the file with `open_source` through the async `windows`
stage under that same spec and feeds one window per step. Both must give the same T frames, bit
for bit, on emulated digits and on real N-MNIST recordings, whatever the chunking.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spikecut.models.data import frame_set, sample_frames
from spikecut.models.training import TrainConfig
from spikecut.pipeline.binning import WindowSpec
from spikecut.pipeline.windowing import windows
from spikecut.sources import open_source
from spikecut.sources.datasets import EmulatedDigits, EventFolder, write_recordings


async def streamed_frames(path, spec: WindowSpec, timesteps: int, **source_args) -> np.ndarray:
    """The first `timesteps` windows the streaming path yields for a file, as [T, P, H, W]."""
    frames = []
    async with open_source(path, **source_args) as source:
        async for window in windows(source, spec):
            frames.append(window.frames)
            if len(frames) == timesteps:
                break
    return np.stack(frames).astype(np.float32)


def checkpoint_spec(config: TrainConfig) -> WindowSpec:
    """The spec as a runner reads it back from a checkpoint's JSON."""
    return WindowSpec.from_dict(config.window_spec().to_dict())


def test_nmnist_spec_is_streamable_fixed_windows_covering_the_recording():
    config = TrainConfig(dataset="nmnist", root="unused")
    spec = config.window_spec()
    assert spec.kind == "time" and spec.streamable
    assert (config.steps, spec.window_us) == (10, 30_000)


@pytest.mark.parametrize("chunk_events", [97, 100_000])
async def test_streamed_emulated_digits_equal_training_frames(tmp_path, chunk_events):
    config = TrainConfig(dataset="emulated-digits")
    spec, steps = checkpoint_spec(config), config.steps
    digits = EmulatedDigits()
    folder = write_recordings(digits, tmp_path / "digits", indices=[0, 1, 2, 3])
    training = frame_set(EventFolder(folder), config.window_spec(), steps)
    for i, path in enumerate(EventFolder(folder).paths):
        streamed = await streamed_frames(path, spec, steps, chunk_events=chunk_events)
        assert streamed.shape == (steps, 2, 34, 34)
        assert streamed.sum() > 1000  # real content, not two empty arrays
        assert torch.equal(torch.from_numpy(streamed), training.frames[i].float())
        # the generated sample itself (no file in between) bins the same
        direct = sample_frames(digits.load(i), digits.info, spec, steps)
        np.testing.assert_array_equal(direct, streamed)


async def test_streamed_real_nmnist_equals_training_frames(nmnist_1k):
    config = TrainConfig(dataset="nmnist", root=str(nmnist_1k))
    spec, steps = checkpoint_spec(config), config.steps
    folder = EventFolder(nmnist_1k / "train")
    subset = folder.subset([0, 1, 2, 500, 999])
    training = frame_set(subset, config.window_spec(), steps)
    for i in range(len(subset)):
        path = subset.parent.paths[int(subset.indices[i])]
        streamed = await streamed_frames(path, spec, steps, chunk_events=211, sensor_size=(34, 34))
        assert streamed.shape == (steps, 2, 34, 34)
        # a 300 ms recording in 30 ms windows fills all ten
        assert (streamed.reshape(steps, -1).sum(axis=1) > 0).all()
        assert torch.equal(torch.from_numpy(streamed), training.frames[i].float())
