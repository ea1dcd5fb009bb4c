"""The dataset layer on real N-MNIST samples, emulated digits and small fake tonic folders."""

from __future__ import annotations

import functools
import pickle
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from spikecut.errors import ConfigError, SourceUnavailableError
from spikecut.sources import read_events
from spikecut.sources.datasets import (
    PRESETS,
    EmulatedDigits,
    EventFolder,
    FramesDataset,
    RandomTranslate,
    Splits,
    TonicDataset,
    first_per_class,
    load_splits,
    stratified_split,
    translate_frames,
    write_recordings,
)
from spikecut.sources.events import EVENT_DTYPE, StreamInfo, check_events, make_events

# --- helpers --------------------------------------------------------------------------------------


def decode_atis(path: Path) -> tuple[np.ndarray, StreamInfo]:
    """Independent decoder of the 5-byte N-MNIST .bin layout (x, y, p<<7 | t[22:16], t[15:8],
    t[7:0]), to cross-check what the datasets get from `read_events`."""
    raw = np.fromfile(path, dtype=np.uint8).reshape(-1, 5).astype(np.int64)
    t = ((raw[:, 2] & 0x7F) << 16) | (raw[:, 3] << 8) | raw[:, 4]
    events = make_events(t, raw[:, 0], raw[:, 1], raw[:, 2] >> 7)
    return events, StreamInfo(34, 34, str(path), format="nmnist-bin")


def encode_atis(events: np.ndarray) -> bytes:
    t = events["t"].astype(np.int64)
    raw = np.stack(
        [events["x"], events["y"], (events["p"].astype(np.int64) << 7) | (t >> 16), t >> 8, t],
        axis=1,
    )
    return (raw & 0xFF).astype(np.uint8).tobytes()


def count_frames(events: np.ndarray, sensor_size: tuple[int, int, int], bins: int = 5):
    """A trivial framing: event counts in `bins` equal windows over 300 ms, [T, 2, H, W]."""
    width, height, _ = sensor_size
    frames = np.zeros((bins, 2, height, width), dtype=np.int64)
    step = np.clip(events["t"] * bins // 300_000, 0, bins - 1)
    np.add.at(frames, (step, events["p"], events["y"], events["x"]), 1)
    return frames


def nmnist_labels(nmnist_1k: Path) -> dict[str, int]:
    lines = (nmnist_1k / "train" / "labels.tsv").read_text().split("\n")
    return {name: int(label) for name, label in (line.split("\t") for line in lines if line)}


@pytest.fixture(scope="module")
def real_nmnist(nmnist_1k) -> EventFolder:
    return EventFolder(nmnist_1k, "train")


@pytest.fixture(scope="module")
def digits() -> EmulatedDigits:
    return EmulatedDigits()


# --- N-MNIST folders ------------------------------------------------------------------------------


def test_nmnist_1k_folder_yields_1000_labelled_34x34_samples(real_nmnist, nmnist_1k):
    labels = nmnist_labels(nmnist_1k)
    assert len(real_nmnist) == 1000
    assert real_nmnist.info.sensor_size == (34, 34, 2)
    assert real_nmnist.classes == tuple("0123456789")
    assert [labels[Path(n).name] for n in real_nmnist.names] == real_nmnist.labels.tolist()
    events, label = real_nmnist[0]
    assert Path(real_nmnist.names[0]).name == "00001.bin" and label == 5
    assert events.dtype == EVENT_DTYPE and 1000 < events.size < 10_000
    # Every sample decodes inside the 34x34 sensor (EventFolder checks it).
    sizes = [real_nmnist.load(i).size for i in range(0, 1000, 7)]
    assert min(sizes) > 500


def test_official_layout_on_a_folder_of_real_files(tmp_path, nmnist_1k):
    labels = nmnist_labels(nmnist_1k)
    names = sorted(labels)[:40]
    for k, name in enumerate(names):
        part = "Test" if k % 4 == 0 else "Train"
        target = tmp_path / part / str(labels[name])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(nmnist_1k / "train" / name, target / name)

    train = EventFolder(tmp_path, "train")
    assert len(train) == 30 and train.classes == tuple("0123456789")
    for i in range(len(train)):
        path = Path(train.names[i])
        assert train.labels[i] == labels[path.name] == int(path.parent.name)
    events, _ = train[3]
    np.testing.assert_array_equal(events, decode_atis(Path(train.names[3]))[0])

    splits = load_splits("nmnist", tmp_path, validation=0.2)
    assert len(splits.test) == 10 and all("/Test/" in n for n in splits.test.names)
    assert len(splits.train) + len(splits.validation) == 30 and len(splits.validation) > 0
    assert not set(splits.train.names) & set(splits.validation.names)


def test_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="has no 'test' folder"):
        EventFolder(tmp_path, "test")
    with pytest.raises(ConfigError, match="neither labels.tsv nor class sub-folders"):
        EventFolder(tmp_path)
    (tmp_path / "labels.tsv").write_text("00001.bin\t3\n")
    with pytest.raises(ConfigError, match="line 1: .*00001.bin does not exist"):
        EventFolder(tmp_path)
    (tmp_path / "00001.bin").write_bytes(b"")
    (tmp_path / "labels.tsv").write_text("00001.bin three\n")
    with pytest.raises(ConfigError, match="expected 'file<TAB>class index'"):
        EventFolder(tmp_path)


def test_nmnist_1k_splits_are_stratified_disjoint_and_seeded(nmnist_1k):
    splits = load_splits("nmnist", nmnist_1k)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (800, 100, 100)
    names = [set(part.names) for part in (splits.train, splits.validation, splits.test)]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    all_counts = np.bincount(
        np.concatenate([splits.train.labels, splits.validation.labels, splits.test.labels])
    )
    np.testing.assert_allclose(np.bincount(splits.test.labels), all_counts * 0.1, atol=0.51)
    assert splits.summary()["test"] == 100 and "seed 0" in splits.description
    again = load_splits("nmnist", nmnist_1k)
    assert again.test.names == splits.test.names
    other = load_splits("nmnist", nmnist_1k, seed=1)
    assert other.test.names != splits.test.names


# --- splits and augmentation ----------------------------------------------------------------------


def test_stratified_split_partitions_every_class():
    labels = np.repeat(np.arange(4), [10, 20, 30, 41])
    test, val, train = stratified_split(labels, [0.1, 0.2], seed=3)
    assert np.array_equal(np.sort(np.concatenate([test, val, train])), np.arange(labels.size))
    np.testing.assert_array_equal(np.bincount(labels[test]), [1, 2, 3, 4])
    np.testing.assert_array_equal(np.bincount(labels[val]), [2, 4, 6, 8])
    with pytest.raises(ConfigError):
        stratified_split(labels, [0.7, 0.5])


def test_first_per_class_keeps_file_order():
    labels = np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1])
    head, tail = first_per_class(labels, 0.9)
    np.testing.assert_array_equal(tail, [9, 19])
    assert head.size == 18


def move_events(events: np.ndarray, dx: int, dy: int, width: int, height: int) -> np.ndarray:
    """Reference: events moved by (dx, dy), those leaving the sensor dropped."""
    x = events["x"].astype(np.int64) + dx
    y = events["y"].astype(np.int64) + dy
    keep = (x >= 0) & (x < width) & (y >= 0) & (y < height)
    return make_events(events["t"][keep], x[keep], y[keep], events["p"][keep])


def test_translated_frames_equal_frames_of_translated_events(digits):
    events = digits.load(0)
    frames = count_frames(events, (34, 34, 2))
    for dx, dy in [(3, -2), (-7, 5), (0, 0), (40, 0), (-33, 33)]:
        expected = count_frames(move_events(events, dx, dy, 34, 34), (34, 34, 2))
        np.testing.assert_array_equal(translate_frames(frames, dx, dy), expected)


def test_random_translate_is_bounded_and_seeded(digits):
    frames = count_frames(digits.load(1), (34, 34, 2))
    shift = RandomTranslate(max_shift_px=4)
    totals = set()
    for seed in range(40):
        moved = shift(frames, np.random.default_rng(seed))
        assert moved.shape == frames.shape and moved.dtype == frames.dtype
        np.testing.assert_array_equal(moved, shift(frames, np.random.default_rng(seed)))
        # A shift of at most 4 px in x and y: some placement of the original covers it.
        assert any(
            np.array_equal(moved, translate_frames(frames, dx, dy))
            for dx in range(-4, 5)
            for dy in range(-4, 5)
        )
        totals.add(int(moved.sum()))
    assert len(totals) > 5
    np.testing.assert_array_equal(RandomTranslate(0)(frames, np.random.default_rng(0)), frames)


# --- emulated digits ------------------------------------------------------------------------------


def test_emulated_digits_are_deterministic_per_sample(digits):
    assert len(digits) == 1797 and digits.classes == tuple("0123456789")
    assert digits.info.sensor_size == (34, 34, 2)
    fresh = EmulatedDigits(cache=False)
    np.testing.assert_array_equal(fresh.load(17), digits.load(17))
    np.testing.assert_array_equal(fresh.load(3), digits.load(3))  # order does not matter
    assert not np.array_equal(EmulatedDigits(seed=1).load(17), digits.load(17))
    from sklearn.datasets import load_digits

    np.testing.assert_array_equal(digits.labels, load_digits().target)


def test_emulated_digits_look_like_real_nmnist(digits, real_nmnist):
    real = [real_nmnist.load(i) for i in range(0, 1000, 10)]
    fake = [digits.load(i) for i in range(0, 1797, 18)]

    def stats(samples):
        counts = np.array([s.size for s in samples])
        hist = sum(np.histogram(s["t"], bins=30, range=(0, 300_000))[0] for s in samples)
        on = np.mean([s["p"].mean() for s in samples])
        last = np.median([s["t"][-1] for s in samples])
        return counts, hist / hist.sum(), on, last

    real_counts, real_hist, real_on, real_last = stats(real)
    fake_counts, fake_hist, fake_on, fake_last = stats(fake)
    # Event counts within a factor 1.5 of N-MNIST's (the brief asks for an order of magnitude).
    assert 1 / 1.5 < fake_counts.mean() / real_counts.mean() < 1.5
    assert fake_counts.min() > real_counts.min() / 3 and fake_counts.max() < real_counts.max() * 3
    # Saccade-shaped timing: same three bursts over ~300 ms, balanced polarities.
    assert np.corrcoef(real_hist, fake_hist)[0, 1] > 0.8
    assert abs(fake_last - real_last) < 20_000
    assert abs(fake_on - real_on) < 0.05
    for sample in fake:
        check_events(sample, 34, 34)


def test_written_recordings_read_back_as_a_folder_and_replay_as_files(tmp_path, digits):
    subset = digits.subset([5, 0, 9])
    out = write_recordings(subset, tmp_path / "digits")
    assert (out / "labels.tsv").read_text().splitlines()[0] == f"00001.npz\t{digits.labels[5]}"
    folder = EventFolder(out)
    assert folder.info.sensor_size == (34, 34, 2) and folder.classes == digits.classes
    np.testing.assert_array_equal(folder.labels, digits.labels[[5, 0, 9]])
    for i in range(3):
        np.testing.assert_array_equal(folder.load(i), subset.load(i))
        events, info = read_events(folder.paths[i])  # what a replay source will see
        assert (info.width, info.height) == (34, 34)
        np.testing.assert_array_equal(events, subset.load(i))
    splits = load_splits("emulated-digits", out, validation=0.0, test=0.0)
    assert len(splits.train) == 3
    as_bin = write_recordings(subset, tmp_path / "bin", suffix=".bin")
    np.testing.assert_array_equal(decode_atis(as_bin / "00002.bin")[0], subset.load(1))


def test_emulated_digits_splits_cover_all_1797():
    splits = load_splits("emulated-digits", seed=2)
    sizes = (len(splits.train), len(splits.validation), len(splits.test))
    assert sum(sizes) == 1797 and sizes[1] == sizes[2] == pytest.approx(180, abs=5)
    assert splits.preset is PRESETS["emulated-digits"]


# --- torch adapter --------------------------------------------------------------------------------


def test_frames_dataset_feeds_a_dataloader_and_augments_training_only():
    import torch

    splits = load_splits("emulated-digits")
    small = Splits(
        splits.train.subset(range(8)),
        splits.validation.subset(range(4)),
        splits.test.subset(range(4)),
        splits.preset,
        splits.description,
    )
    train, val, test = small.frames(count_frames, RandomTranslate(3), seed=7)
    assert train.augment is not None and val.augment is None and test.augment is None
    frames, label = train[0]
    assert frames.dtype == torch.float32 and frames.shape == (5, 2, 34, 34)
    assert label == int(small.train.labels[0])
    plain = count_frames(small.train.load(0), (34, 34, 2))
    np.testing.assert_array_equal(
        val.frames(0), count_frames(small.validation.load(0), (34, 34, 2))
    )
    assert frames.sum() <= plain.sum()
    np.testing.assert_array_equal(train[0][0].numpy(), frames.numpy())  # same epoch, same shift
    shifted = {train.frames(0).tobytes()}
    for epoch in range(1, 6):
        train.set_epoch(epoch)
        shifted.add(train.frames(0).tobytes())
    assert len(shifted) > 1
    batch, labels = next(iter(torch.utils.data.DataLoader(train, batch_size=4)))
    assert batch.shape == (4, 5, 2, 34, 34) and labels.tolist() == small.train.labels[:4].tolist()


def test_frames_dataset_with_the_pipelines_own_framing(digits, real_nmnist):
    from spikecut.pipeline.binning import WindowSpec, frames_for_recording

    preset = PRESETS["nmnist"]
    spec = WindowSpec(n_bins=preset.timesteps, span_us=preset.span_us)
    framing = functools.partial(frames_for_recording, spec=spec)
    for dataset in (digits, real_nmnist):
        frames_set = FramesDataset(dataset, framing)
        frames, label = frames_set[4]
        events = dataset.load(4)
        assert frames.shape == (10, 2, 34, 34) and label == dataset.labels[4]
        in_span = np.sum(events["t"] < events["t"][0] + preset.span_us)
        assert frames.sum().item() == in_span
        # The three saccades show up as three busy thirds of the bins.
        per_bin = frames.sum(dim=(1, 2, 3)).numpy()
        assert per_bin.min() >= 0 and per_bin[[1, 4, 8]].min() > per_bin[[0, 9]].max()
    augmented = FramesDataset(digits, framing, RandomTranslate(5), seed=3)
    rng = np.random.default_rng([3, 0, 4])
    dx, dy = rng.integers(-5, 6, size=2)
    expected = translate_frames(framing(digits.load(4), digits.sensor_size), int(dx), int(dy))
    np.testing.assert_array_equal(augmented.frames(4), expected)


def test_frames_dataset_rejects_framing_of_the_wrong_rank(digits):
    frames = FramesDataset(digits, lambda events, size: np.zeros((2, 34, 34)))
    with pytest.raises(Exception, match=r"expected \[T, P, H, W\]"):
        frames[0]


# --- tonic presets, offline -----------------------------------------------------------------------


def test_tonic_missing_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tonic", None)
    monkeypatch.setitem(sys.modules, "tonic.datasets", None)
    with pytest.raises(SourceUnavailableError, match=r"spikecut\[datasets\]"):
        TonicDataset("cifar10-dvs", tmp_path)


def test_tonic_never_downloads_without_permission(tmp_path):
    pytest.importorskip("tonic")
    for name in ("cifar10-dvs", "ncaltech101"):
        with pytest.raises(SourceUnavailableError, match="download=True"):
            TonicDataset(name, tmp_path)
    with pytest.raises(SourceUnavailableError, match="download=True"):
        load_splits("dvs-gesture", tmp_path)
    assert not any(tmp_path.rglob("*.zip")) and not any(tmp_path.rglob("*.tar.gz"))
    with pytest.raises(ConfigError, match="part must be one of"):
        TonicDataset("dvs-gesture", tmp_path, "all")


def gesture_clip(rng: np.random.Generator, duration_ms: int, start_ms: int) -> np.ndarray:
    """tonic's preprocessed DVSGesture layout: float rows (x, y, p, t in ms)."""
    n = 400
    t = np.sort(rng.uniform(start_ms, start_ms + duration_ms, n))
    return np.stack([rng.integers(0, 128, n), rng.integers(0, 128, n), rng.integers(0, 2, n), t], 1)


def test_dvs_gesture_preset_on_a_fake_folder(tmp_path):
    pytest.importorskip("tonic")
    rng = np.random.default_rng(0)
    for part, users in (("ibmGestureTrain", range(1, 5)), ("ibmGestureTest", [24, 25])):
        for user in users:
            folder = tmp_path / "DVSGesture" / part / f"user{user:02d}_fluorescent"
            folder.mkdir(parents=True)
            for label in range(11):
                np.save(folder / f"{label}.npy", gesture_clip(rng, 3000, 5000 + 100 * label))
    splits = load_splits("dvs-gesture", tmp_path, validation=0.25)
    assert len(splits.test) == 22 and len(splits.train) + len(splits.validation) == 44
    assert len(splits.validation) == 11  # one user's worth, stratified over 11 classes
    assert all("ibmGestureTest" in n for n in splits.test.names)
    assert len(splits.test.classes) == 11
    events, label = splits.train[0]
    assert events.dtype == EVENT_DTYPE and events["t"][0] == 0
    assert events["t"][-1] < 1_300_000 and events.size < 400  # first 1.3 s of a 3 s clip
    assert label == int(Path(splits.train.names[0]).stem)
    # DataLoader workers receive datasets by pickling.
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(splits.train)).load(0), events)


def test_ncaltech101_preset_on_a_fake_folder(tmp_path):
    pytest.importorskip("tonic")
    rng = np.random.default_rng(1)
    for cls in ("accordion", "airplanes"):
        folder = tmp_path / "NCALTECH101" / "Caltech101" / cls
        folder.mkdir(parents=True)
        for k in range(1, 21):
            n = 300
            x, y = rng.integers(10, 200, n), rng.integers(5, 170, n)
            t = np.sort(rng.integers(1000, 300_000, n))
            events = make_events(t, x, y, rng.integers(0, 2, n))
            (folder / f"image_{k:04d}.bin").write_bytes(encode_atis(events))
    dataset = TonicDataset("ncaltech101", tmp_path)
    assert dataset.classes == ("accordion", "airplanes") and len(dataset) == 40
    assert Path(dataset.names[0]).name == "image_0001.bin"
    assert Path(dataset.names[19]).name == "image_0020.bin"
    splits = load_splits("ncaltech101", tmp_path, validation=0.0)
    assert (
        sorted(Path(n).name for n in splits.test.names)
        == ["image_0019.bin"] * 2 + ["image_0020.bin"] * 2
    )
    events, _ = splits.test[0]
    check_events(events, 240, 180)
    original, _ = decode_atis(Path(splits.test.names[0]))
    assert events.size == original.size and events["t"][0] == 0
    np.testing.assert_array_equal(events["x"], original["x"] - original["x"].min())


def test_cifar10_dvs_preset_with_tonic_reader_mocked(tmp_path, monkeypatch):
    tonic_cifar = pytest.importorskip("tonic.datasets.cifar10dvs")
    rng = np.random.default_rng(2)
    stored = {}
    for cls in ("airplane", "automobile"):
        folder = tmp_path / "CIFAR10DVS" / cls
        folder.mkdir(parents=True)
        for k in range(20):
            path = folder / f"cifar10_{cls}_{k}.aedat4"
            path.write_bytes(b"stand-in; the aedat4 decoder is mocked")
            n = 200
            events = np.zeros(n, dtype=tonic_cifar.CIFAR10DVS.dtype)
            events["t"] = np.sort(rng.integers(10**9, 10**9 + 1_200_000, n))
            events["x"], events["y"] = rng.integers(0, 128, n), rng.integers(0, 128, n)
            events["p"] = rng.integers(0, 2, n).astype(bool)
            stored[str(path)] = events
    monkeypatch.setattr(tonic_cifar, "read_aedat4", lambda path: stored[path].copy())
    splits = load_splits("cifar10-dvs", tmp_path, validation=0.1)
    # Natural file order per class: samples 18 and 19 of each class are the test set.
    assert sorted(Path(n).name for n in splits.test.names) == [
        "cifar10_airplane_18.aedat4",
        "cifar10_airplane_19.aedat4",
        "cifar10_automobile_18.aedat4",
        "cifar10_automobile_19.aedat4",
    ]
    assert len(splits.train) == 32 and len(splits.validation) == 4
    assert splits.test.classes[:2] == ("airplane", "automobile")
    events, label = splits.test[0]
    assert label == 0 and events["t"][0] == 0 and events.dtype == EVENT_DTYPE
    raw = stored[splits.test.names[0]]
    np.testing.assert_array_equal(events["t"], raw["t"].astype(np.int64) - int(raw["t"][0]))
