"""Training on a tiny emulated-digits set: the loss falls, a resume continues exactly, the
checkpoint is complete (BN folded, β[t] per ε, the window spec), conversion works, and the
pieces that make distributed runs equal single-process ones behave."""

from __future__ import annotations

import json
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from spikecut.errors import ConfigError
from spikecut.models import (
    TopKRule,
    build_model,
    load_checkpoint,
    rcs_loss,
    record_activations,
)
from spikecut.models.data import augment_batch, sample_frames
from spikecut.models.distributed import DistContext
from spikecut.models.training import (
    EPSILONS,
    TrainConfig,
    epoch_batches,
    global_rcs_loss,
    make_splits,
    split_frames,
    train,
)
from spikecut.pipeline.binning import WindowSpec
from spikecut.sources.datasets import (
    EmulatedDigits,
    FramesDataset,
    RandomTranslate,
    write_recordings,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory) -> Path:
    """150 emulated digits written once as recordings (reading them is faster than emulating)."""
    folder = tmp_path_factory.mktemp("digits")
    return write_recordings(EmulatedDigits(), folder, indices=range(150))


def tiny(folder: Path, out: Path, **changes) -> TrainConfig:
    base = TrainConfig(
        dataset="emulated-digits",
        root=str(folder),
        timesteps=4,
        epochs=3,
        batch_size=16,
        limit=48,
        validation=0.2,
        test=0.2,
        out_dir=str(out),
    )
    return replace(base, **changes)


def log_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(digits_folder, tmp_path_factory):
    torch.set_num_threads(1)
    config = tiny(digits_folder, tmp_path_factory.mktemp("run") / "direct", alpha=0.002)
    return config, train(config, progress=False)


def test_loss_decreases_and_the_log_has_every_epoch(trained):
    config, result = trained
    rows = log_rows(result.run_dir)
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert rows[-1]["train_acc"] > rows[0]["train_acc"]
    assert all(r["rcs"] > 0 for r in rows)  # RCS was on
    assert len(rows[0]["val_acc_per_t"]) == config.steps
    assert sum(r["best"] for r in rows) >= 1
    assert result.best_epoch in (0, 1, 2) and result.epochs_done == 3


def test_checkpoint_is_folded_calibrated_and_streamable(trained):
    config, result = trained
    net, ckpt = load_checkpoint(result.checkpoint)
    assert net.spec["bn_folded"] and ckpt.timesteps == config.steps == 4
    rule = ckpt.cutoff_rule()
    assert isinstance(rule, TopKRule) and len(rule.beta) == 4
    calibration = ckpt.extra["calibration"]
    assert calibration["epsilons"] == list(EPSILONS)
    assert len(calibration["beta"]) == 10 and all(len(b) == 4 for b in calibration["beta"])
    # the stored rule is the sweep's ε chosen on validation: no accuracy lost there
    assert calibration["beta"][EPSILONS.index(rule.epsilon)] == rule.beta
    validation = ckpt.extra["validation"]
    assert validation["epsilon_chosen_on_validation"]
    assert validation["topk_acc"] >= validation["acc_T"]
    # β can only fall as ε grows (a looser confidence target)
    betas = np.array(calibration["beta"])
    assert (np.diff(betas, axis=0) <= 1e-12).all()
    assert calibration["dropout"] == 0.3 and calibration["set"] == "train"
    spec = WindowSpec.from_dict(ckpt.windowing)
    assert spec == config.window_spec() and spec.streamable and spec.window_us == 75_000
    assert ckpt.sensor_size == (34, 34) and ckpt.class_names == [str(d) for d in range(10)]
    assert ckpt.extra["splits"]["train"] == 48
    # the deployable network runs step by step
    state = net.init_state()
    with torch.no_grad():
        for _ in range(4):
            _, state = net.step(torch.zeros(1, 2, 34, 34), state)
    assert state.t == 4 and state.y.shape == (1, 10)


def test_resume_continues_exactly(trained, tmp_path):
    config, result = trained
    interrupted = replace(config, out_dir=str(tmp_path / "resumed"))
    first = train(interrupted, stop_after=1, progress=False)
    assert first.checkpoint is None and first.epochs_done == 1
    second = train(interrupted, progress=False)
    assert second.epochs_done == 3
    ours = load_file(Path(second.checkpoint) / "weights.safetensors")
    reference = load_file(Path(result.checkpoint) / "weights.safetensors")
    assert ours.keys() == reference.keys()
    for key in ours:
        assert torch.equal(ours[key], reference[key]), key

    def strip(rows):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    assert strip(log_rows(second.run_dir)) == strip(log_rows(result.run_dir))
    _, a = load_checkpoint(second.checkpoint)
    _, b = load_checkpoint(result.checkpoint)
    assert a.cutoff == b.cutoff


def test_resume_refuses_another_configuration(trained):
    config, _ = trained
    with pytest.raises(ConfigError, match="alpha"):
        train(replace(config, alpha=0.005), progress=False)


def test_conversion_trains_a_qcfs_ann_and_ships_its_if_twin(digits_folder, tmp_path):
    config = tiny(
        digits_folder, tmp_path / "qcfs", method="conversion", alpha=0.002, epochs=1, limit=32
    )
    result = train(config, progress=False)
    net, ckpt = load_checkpoint(result.checkpoint)
    assert net.spec.get("converted_from") == "qcfs" and net.spec["bn_folded"]
    assert net.spec["kwargs"]["neuron"]["kind"] == "if"
    assert ckpt.extra["method"] == "conversion" and ckpt.extra["loss"] == "mean"
    assert ckpt.extra["training"]["ann_frames"] == "prefix"  # the ANN saw prefix means
    assert 0 <= log_rows(result.run_dir)[0]["val_ann_acc"] <= 1
    assert isinstance(ckpt.cutoff_rule(), TopKRule)


def test_global_rcs_equals_rcs_loss_in_one_process():
    torch.manual_seed(0)
    frames = torch.rand(4, 6, 2, 34, 34).round()
    labels = torch.randint(0, 10, (6,))
    for flavour in ("snn", "ann"):
        net = build_model("nmnist_small", flavour=flavour)
        with record_activations() as records:
            out = net(frames)
        labels = out.sum(0).argmax(-1)  # every sample correct, so the mask keeps all
        expected = rcs_loss(records, out, labels)
        got = global_rcs_loss(records, out, labels)
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)


def test_epoch_batches_split_each_global_batch_over_processes():
    single = epoch_batches(70, 8, seed=3, epoch=2, context=DistContext())
    assert len(single) == 8 and all(len(b) == 8 for b in single)  # 6 left over: dropped
    assert len({i for b in single for i in b}) == 64
    ranks = [
        epoch_batches(70, 8, seed=3, epoch=2, context=DistContext(rank=r, world=2))
        for r in range(2)
    ]
    for k, batch in enumerate(single):
        assert sorted(ranks[0][k] + ranks[1][k]) == sorted(batch)
        assert len(ranks[0][k]) == len(ranks[1][k]) == 4
    assert epoch_batches(70, 8, seed=3, epoch=3, context=DistContext()) != single
    with pytest.raises(ConfigError, match="divisible"):
        epoch_batches(70, 9, seed=0, epoch=0, context=DistContext(rank=0, world=2))


def test_training_shifts_are_the_datasets_random_translate(digits_folder, tmp_path):
    config = tiny(digits_folder, tmp_path / "unused", limit=12, max_shift_px=3)
    splits = make_splits(config)
    cached = split_frames(config, splits, "train")
    augment = RandomTranslate(3)
    reference = FramesDataset(
        splits.train,
        partial(sample_frames, spec=config.window_spec(), timesteps=config.steps),
        augment,
        seed=5,
    )
    reference.set_epoch(2)
    indices = [0, 3, 11]
    frames, _ = cached.batch(indices)
    shifted = augment_batch(frames, indices, augment, seed=5, epoch=2)
    assert not torch.equal(shifted, frames)
    for k, i in enumerate(indices):
        np.testing.assert_array_equal(shifted[k].numpy(), reference.frames(i))
    assert augment_batch(frames, indices, None, 5, 2) is frames


def test_lazy_binning_trains_the_same_network_as_the_memory_cache(digits_folder, tmp_path):
    memory = tiny(digits_folder, tmp_path / "memory", epochs=1, limit=32, max_shift_px=2)
    lazy = replace(memory, cache="lazy", out_dir=str(tmp_path / "lazy"))
    splits = make_splits(memory)
    cached = split_frames(memory, splits, "train")
    on_demand = split_frames(lazy, splits, "train")
    assert isinstance(on_demand, FramesDataset) and len(on_demand) == len(cached) == 32
    for i in (0, 7, 31):
        frames, label = on_demand[i]
        assert torch.equal(frames, cached[i][0]) and label == cached[i][1]
    a = train(memory, progress=False)
    b = train(lazy, progress=False)
    ours = load_file(Path(b.run_dir) / "last" / "state-0" / "weights.safetensors")
    reference = load_file(Path(a.run_dir) / "last" / "state-0" / "weights.safetensors")
    for key in reference:
        assert torch.equal(ours[key], reference[key]), key
