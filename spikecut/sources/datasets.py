"""Labelled event recordings for training and evaluation.

A dataset here is event-level: `dataset[i]` is `(events, label)` with `EVENT_DTYPE` events on the
sensor described by `dataset.info`. Turning events into frames is not this module's job: the
training code passes the pipeline's own framing function (the one the live stream uses, with the
checkpoint's window parameters) to `FramesDataset`, so training and streaming see identical frames.

Sources:
- `EventFolder`: a folder of recordings with labels, in the official N-MNIST layout
  (`Train/<class>/*.bin`, `Test/<class>/*.bin`) or the flat layout of `nmnist_1k` and of
  `write_recordings` (`NNNNN.<ext>` files listed in `labels.tsv`, optional `info.json`), in any
  format `spikecut.sources.read_events` reads.
- `EmulatedDigits`: scikit-learn's 1797 bundled 8x8 digits moved along N-MNIST's saccades in front
  of the DVS emulator. Needs no download, generates ~150 samples/s on one core.
- `TonicDataset`: CIFAR10-DVS, DVS128 Gesture and N-Caltech101 through tonic (optional extra
  `datasets`, GPL-3.0, imported only when one of these is asked for); nothing is downloaded unless
  `download=True`.

`load_splits(name, ...)` returns train / validation / test views with the paper's split for each
dataset and a stratified, seeded validation split for model selection (see `load_splits`).
`RandomTranslate` is the training augmentation; apply it to the training split only (as
`Splits.frames` does).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from spikecut.errors import ConfigError, EventDataError, SourceUnavailableError
from spikecut.sources.emulator import EmulatorConfig, SaccadeConfig, emulate_saccades
from spikecut.sources.events import StreamInfo, as_events, check_events, out_of_bounds
from spikecut.sources.files import read_events, write_events

if TYPE_CHECKING:
    import torch

__all__ = [
    "DIGITS_EMULATOR",
    "DIGITS_SACCADES",
    "PRESETS",
    "DatasetPreset",
    "EmulatedDigits",
    "EventDataset",
    "EventFolder",
    "EventSubset",
    "FramesDataset",
    "RandomTranslate",
    "Splits",
    "TonicDataset",
    "first_per_class",
    "get_preset",
    "load_splits",
    "stratified_split",
    "translate_frames",
    "write_recordings",
]

#: `(events, sensor_size)` -> frames [T, P, H, W]; `sensor_size` is (width, height, polarities).
Framing = Callable[[np.ndarray, tuple[int, int, int]], np.ndarray]
#: `path` -> `(events, StreamInfo)`, the signature of `spikecut.sources.read_events`.
Reader = Callable[[Path], tuple[np.ndarray, StreamInfo]]

LABELS_FILE = "labels.tsv"
INFO_FILE = "info.json"
DIGIT_CLASSES = tuple(str(d) for d in range(10))


# --- presets ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetPreset:
    """A dataset's sensor, classes and the paper's training settings for it.

    `timesteps` is T. `span_us` is the stretch of each sample the T windows cover (so a fixed
    window is `span_us // timesteps`), or None where the paper bins each sample's own duration into
    T equal windows. `crop_us` keeps only the first `crop_us` of every sample (after re-zeroing to
    its first event). `max_shift_px` is the training translation (0: no augmentation).
    """

    name: str
    width: int
    height: int
    num_classes: int
    timesteps: int
    span_us: int | None
    crop_us: int | None
    max_shift_px: int
    split: str

    @property
    def sensor_size(self) -> tuple[int, int, int]:
        return (self.width, self.height, 2)


PRESETS: dict[str, DatasetPreset] = {
    preset.name: preset
    for preset in (
        DatasetPreset(
            name="nmnist",
            width=34,
            height=34,
            num_classes=10,
            timesteps=10,
            span_us=300_000,
            crop_us=None,
            max_shift_px=0,
            split="the Test folder if there is one, else stratified 80/10/10 (seed)",
        ),
        DatasetPreset(
            name="emulated-digits",
            width=34,
            height=34,
            num_classes=10,
            timesteps=10,
            span_us=300_000,
            crop_us=None,
            max_shift_px=0,
            split="stratified 80/10/10 of the 1797 digits (seed)",
        ),
        DatasetPreset(
            name="cifar10-dvs",
            width=128,
            height=128,
            num_classes=10,
            timesteps=10,
            span_us=None,
            crop_us=None,
            max_shift_px=25,
            split="first 90% of each class in file order train, last 10% test",
        ),
        DatasetPreset(
            name="dvs-gesture",
            width=128,
            height=128,
            num_classes=11,
            timesteps=16,
            span_us=1_300_000,
            crop_us=1_300_000,
            max_shift_px=25,
            split="users 1-23 train, users 24-29 test (tonic's parts)",
        ),
        DatasetPreset(
            name="ncaltech101",
            width=240,
            height=180,
            num_classes=101,
            timesteps=10,
            span_us=None,
            crop_us=None,
            max_shift_px=25,
            split="first 90% of each class in file order train, last 10% test",
        ),
    )
}


def get_preset(name: str) -> DatasetPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(PRESETS)}") from None


# --- the dataset interface ----------------------------------------------------------------------


class EventDataset:
    """Labelled recordings decoded on demand.

    Subclasses set `info` (the sensor every sample lives on), `classes`, `labels` (int64, known
    without decoding, for stratified splits) and `names` (a file path or other identifier per
    sample), and implement `_load(i)`.
    """

    info: StreamInfo
    classes: tuple[str, ...]
    labels: np.ndarray
    names: tuple[str, ...]

    def _load(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        return self.load(index), int(self.labels[index])

    def __iter__(self) -> Iterator[tuple[np.ndarray, int]]:
        return (self[i] for i in range(len(self)))

    def load(self, index: int) -> np.ndarray:
        """The events of sample `index` (negative indices count from the end)."""
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"sample {index} out of range for a dataset of {n}")
        return self._load(int(index) % n)

    @property
    def sensor_size(self) -> tuple[int, int, int]:
        return self.info.sensor_size

    def subset(self, indices: Sequence[int] | np.ndarray) -> EventSubset:
        return EventSubset(self, indices)

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(self.classes))
        return {name: int(c) for name, c in zip(self.classes, counts, strict=False)}


class EventSubset(EventDataset):
    """A view of some samples of another dataset, in the order given."""

    def __init__(self, parent: EventDataset, indices: Sequence[int] | np.ndarray) -> None:
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if indices.size and (indices.min() < 0 or indices.max() >= len(parent)):
            raise IndexError(f"subset indices must be in 0..{len(parent) - 1}")
        self.parent = parent
        self.indices = indices
        self.info = parent.info
        self.classes = parent.classes
        self.labels = parent.labels[indices]
        self.names = tuple(parent.names[i] for i in indices)

    def _load(self, index: int) -> np.ndarray:
        return self.parent.load(int(self.indices[index]))


# --- folders of files -----------------------------------------------------------------------------


def _natural_key(text: str) -> list[Any]:
    """Sort key with numbers compared as numbers: `img_2` before `img_10`."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


class EventFolder(EventDataset):
    """A folder of labelled recordings in one of two layouts.

    - Flat (`nmnist_1k`, `write_recordings`): files listed in `labels.tsv`, one
      `file name<TAB>class index` per line; an optional `info.json` gives `width`, `height` and
      `classes`.
    - Per class (official N-MNIST): one sub-folder per class holding the files; folders named by
      integers are those class indices, otherwise classes are the sorted folder names.

    `part` picks a sub-folder first (`"train"` or `"test"`, case-insensitive: N-MNIST ships
    `Train/` and `Test/`). Files are decoded by `reader` (default: `spikecut.sources.read_events`,
    so every format our readers know works) and checked against the `width` x `height` sensor,
    34x34 for N-MNIST unless `info.json` says otherwise.
    """

    def __init__(
        self,
        root: str | PathLike[str],
        part: str | None = None,
        *,
        width: int | None = None,
        height: int | None = None,
        classes: Sequence[str] | None = None,
        reader: Reader | None = None,
    ) -> None:
        root = Path(root)
        folder = _find_part(root, part) if part is not None else root
        if not folder.is_dir():
            raise ConfigError(f"dataset folder {folder} does not exist")
        meta = _read_info(folder)
        if (folder / LABELS_FILE).is_file():
            paths, labels, found_classes = _flat_layout(folder)
        else:
            paths, labels, found_classes = _class_folder_layout(folder)
        self.root = folder
        self.paths = tuple(paths)
        self.names = tuple(str(p) for p in paths)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.classes = tuple(classes or meta.get("classes") or found_classes)
        if self.labels.size and self.labels.max() >= len(self.classes):
            raise ConfigError(
                f"{folder}: label {self.labels.max()} has no class name (classes {self.classes})"
            )
        self.info = StreamInfo(
            int(width or meta.get("width", 34)),
            int(height or meta.get("height", 34)),
            str(folder),
            time_origin="recording",
        )
        self._reader = reader or read_events

    def _load(self, index: int) -> np.ndarray:
        path = self.paths[index]
        events, _ = self._reader(path)
        check_events(events, self.info.width, self.info.height, source=str(path))
        return events


def _find_part(root: Path, part: str) -> Path:
    if not root.is_dir():
        raise ConfigError(f"dataset folder {root} does not exist")
    subfolders = [p for p in root.iterdir() if p.is_dir()]
    for sub in subfolders:
        if sub.name.lower() == part.lower():
            return sub
    names = ", ".join(sorted(p.name for p in subfolders)) or "none"
    raise ConfigError(f"{root} has no {part!r} folder (sub-folders: {names})")


def _read_info(folder: Path) -> dict[str, Any]:
    path = folder / INFO_FILE
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: not a JSON object: {exc}") from None


def _flat_layout(folder: Path) -> tuple[list[Path], list[int], tuple[str, ...]]:
    labels_path = folder / LABELS_FILE
    paths, labels = [], []
    for number, line in enumerate(labels_path.read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 2 or not fields[1].strip().isdigit():
            raise ConfigError(
                f"{labels_path} line {number}: expected 'file<TAB>class index', got {line!r}"
            )
        path = folder / fields[0].strip()
        if not path.is_file():
            raise ConfigError(f"{labels_path} line {number}: {path} does not exist")
        paths.append(path)
        labels.append(int(fields[1]))
    if not paths:
        raise ConfigError(f"{labels_path} lists no recordings")
    return paths, labels, tuple(str(c) for c in range(max(labels) + 1))


def _class_folder_layout(folder: Path) -> tuple[list[Path], list[int], tuple[str, ...]]:
    class_dirs = sorted((p for p in folder.iterdir() if p.is_dir()), key=lambda p: p.name)
    if not class_dirs:
        raise ConfigError(
            f"{folder} has neither {LABELS_FILE} nor class sub-folders: not a dataset folder"
        )
    if all(d.name.isdigit() for d in class_dirs):
        index = {d.name: int(d.name) for d in class_dirs}
        classes = tuple(str(c) for c in range(max(index.values()) + 1))
    else:
        index = {d.name: i for i, d in enumerate(class_dirs)}
        classes = tuple(d.name for d in class_dirs)
    paths, labels = [], []
    for class_dir in sorted(class_dirs, key=lambda d: index[d.name]):
        files = [p for p in class_dir.iterdir() if p.is_file() and not p.name.startswith(".")]
        for path in sorted(files, key=lambda p: _natural_key(p.name)):
            paths.append(path)
            labels.append(index[class_dir.name])
    if not paths:
        raise ConfigError(f"{folder}: the class sub-folders hold no files")
    return paths, labels, classes


def write_recordings(
    dataset: EventDataset,
    out_dir: str | PathLike[str],
    indices: Sequence[int] | None = None,
    *,
    suffix: str = ".npz",
) -> Path:
    """Write samples as `NNNNN<suffix>` recordings with `labels.tsv` and `info.json`.

    Files are written by `spikecut.sources.write_events`, so any format it writes works; the
    default `.npz` keeps the sensor size, which a replay source then reports exactly (a bare `.npy`
    would leave it to be guessed from the largest coordinate). The folder reads back as an
    `EventFolder` in the flat layout.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chosen = range(len(dataset)) if indices is None else indices
    lines = []
    for k, i in enumerate(chosen, start=1):
        events, label = dataset[int(i)]
        name = f"{k:05d}{suffix}"
        write_events(out / name, events, dataset.info)
        lines.append(f"{name}\t{label}\n")
    (out / LABELS_FILE).write_text("".join(lines))
    info = {
        "width": dataset.info.width,
        "height": dataset.info.height,
        "classes": list(dataset.classes),
        "source": dataset.info.source,
        "recordings": len(lines),
    }
    (out / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return out


# --- emulated digits ------------------------------------------------------------------------------

#: MNIST digits fill a 20 px box inside 28 px; scaling the 8x8 digits to 20 px and these sensor
#: settings give ~4,300 events per sample over ~540 active pixels (real N-MNIST: ~4,100 and ~450).
DIGITS_SACCADES = SaccadeConfig(image_px=20.0)
DIGITS_EMULATOR = EmulatorConfig(
    threshold_on=0.25,
    threshold_off=0.25,
    threshold_sigma=0.03,
    refractory_us=1000,
    noise_rate_hz=0.2,
)


@cache
def _digit_images() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float64)
    images.setflags(write=False)
    return images, digits.target.astype(np.int64)


@dataclass(eq=False)
class EmulatedDigits(EventDataset):
    """scikit-learn's 1797 handwritten 8x8 digits as N-MNIST-like event recordings.

    Sample `i` is generated from `(seed, i)` alone: the whole path is jittered by up to
    `jitter_px` and the emulator gets its own mismatch and noise, so any sample can be built on its
    own, in any order, and always comes out the same. With `cache`, generated samples are kept in
    memory (~55 kB each).
    """

    seed: int = 0
    saccades: SaccadeConfig = DIGITS_SACCADES
    emulator: EmulatorConfig = DIGITS_EMULATOR
    jitter_px: float = 0.5
    cache: bool = True
    _memory: dict[int, np.ndarray] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        images, targets = _digit_images()
        self.labels = targets
        self.classes = DIGIT_CLASSES
        self.names = tuple(f"digits:{i}" for i in range(len(targets)))
        self.info = StreamInfo(
            self.saccades.width, self.saccades.height, "emulated-digits", time_origin="recording"
        )

    def _load(self, index: int) -> np.ndarray:
        if index in self._memory:
            return self._memory[index]
        images, _ = _digit_images()
        rng = np.random.default_rng([self.seed, index])
        offset = rng.uniform(-self.jitter_px, self.jitter_px, size=2)
        events = emulate_saccades(images[index], self.saccades, self.emulator, rng, tuple(offset))
        if self.cache:
            self._memory[index] = events
        return events


# --- tonic datasets -------------------------------------------------------------------------------

# preset name -> (tonic class name, file extension that shows the data is present)
_TONIC_CLASSES = {
    "cifar10-dvs": ("CIFAR10DVS", ".aedat4"),
    "dvs-gesture": ("DVSGesture", ".npy"),
    "ncaltech101": ("NCALTECH101", ".bin"),
}


def _import_tonic_datasets() -> Any:
    try:
        import tonic.datasets
    except ImportError as exc:
        raise SourceUnavailableError(
            "CIFAR10-DVS, DVS128 Gesture and N-Caltech101 are read through tonic, which is not "
            "installed: install the optional extra with pip install 'spikecut[datasets]'"
        ) from exc
    return tonic.datasets


def _offline(cls: type, name: str, extension: str) -> type:
    """`cls` that accepts extracted files without their archive and never downloads."""

    def check_exists(self: Any) -> bool:
        return self._folder_contains_at_least_n_files_of_type(1, extension)

    def refuse(self: Any) -> None:
        raise SourceUnavailableError(
            f"{name}: no {extension} files under {self.location_on_system}; put the extracted "
            "dataset there or pass download=True (needs internet)"
        )

    # tonic derives the data folder from the class name, so the subclass keeps it.
    return type(cls.__name__, (cls,), {"_check_exists": check_exists, "download": refuse})


class TonicDataset(EventDataset):
    """CIFAR10-DVS, DVS128 Gesture or N-Caltech101 from tonic, under the preset's settings.

    `root` is tonic's `save_to` (the data sits in `root/<tonic class name>/`). `part` is "train" or
    "test" for DVS128 Gesture (tonic keeps the two apart) and "all" for the others, which
    `load_splits` divides. Samples are listed per class in natural file-name order (the "file
    order" the paper's 90/10 split refers to), re-zeroed to their first event, cropped to the
    preset's `crop_us`, sorted by time, and, for N-Caltech101's variable-size recordings, clipped to
    the preset's 240x180 canvas.
    """

    def __init__(
        self,
        name: str,
        root: str | PathLike[str],
        part: str = "all",
        *,
        download: bool = False,
    ) -> None:
        if name not in _TONIC_CLASSES:
            raise ConfigError(
                f"{name!r} is not a tonic dataset; known: {', '.join(_TONIC_CLASSES)}"
            )
        self.preset = get_preset(name)
        parts = ("train", "test") if name == "dvs-gesture" else ("all",)
        if part not in parts:
            raise ConfigError(f"{name}: part must be one of {parts}, got {part!r}")
        class_name, extension = _TONIC_CLASSES[name]
        cls = getattr(_import_tonic_datasets(), class_name)
        kwargs = {"train": part == "train"} if name == "dvs-gesture" else {}
        if download:
            self._tonic = cls(save_to=str(root), **kwargs)
        else:
            self._tonic = _offline(cls, name, extension)(save_to=str(root), **kwargs)
            self._tonic.__class__ = cls  # plain tonic again: picklable for DataLoader workers

        targets = list(self._tonic.targets)
        if name == "ncaltech101":  # tonic gives class folder names
            classes = tuple(sorted(set(targets)))
            targets = [classes.index(t) for t in targets]
        elif name == "dvs-gesture":
            classes = tuple(self._tonic.classes)
        else:
            classes = tuple(sorted(self._tonic.classes, key=self._tonic.classes.get))
        data = [str(p) for p in self._tonic.data]
        order = sorted(range(len(data)), key=lambda i: (targets[i], _natural_key(data[i])))
        self._order = np.asarray(order, dtype=np.int64)
        self.labels = np.asarray([targets[i] for i in order], dtype=np.int64)
        self.names = tuple(data[i] for i in order)
        self.classes = classes
        self.info = StreamInfo(
            self.preset.width, self.preset.height, f"{name}:{root}", time_origin="recording"
        )

    def _load(self, index: int) -> np.ndarray:
        raw, _ = self._tonic[int(self._order[index])]
        events = as_events(raw)
        if events.size:
            events = events[np.argsort(events["t"], kind="stable")]
            events["t"] -= events["t"][0]
        if self.preset.crop_us is not None:
            events = events[events["t"] < self.preset.crop_us]
        if self.preset.name == "ncaltech101":
            events = events[~out_of_bounds(events, self.info.width, self.info.height)]
        check_events(events, self.info.width, self.info.height, source=self.names[index])
        return events


# --- splits ---------------------------------------------------------------------------------------


def stratified_split(
    labels: np.ndarray, fractions: Sequence[float], seed: int = 0
) -> list[np.ndarray]:
    """Split indices into len(fractions) + 1 parts, class by class, with a seeded shuffle.

    Part k gets round(fractions[k] * n_c) samples of each class c; the last part gets the rest.
    Each part's indices are returned sorted.
    """
    labels = np.asarray(labels)
    if any(f < 0 for f in fractions) or sum(fractions) > 1:
        raise ConfigError(f"split fractions must be >= 0 and sum to <= 1, got {list(fractions)}")
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        start = 0
        for k, fraction in enumerate(fractions):
            stop = start + int(round(fraction * members.size))
            parts[k].append(members[start:stop])
            start = stop
        parts[-1].append(members[start:])
    return [np.sort(np.concatenate(p)) if p else np.empty(0, np.int64) for p in parts]


def first_per_class(labels: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(first `fraction` of each class, the rest), keeping the given order: the paper's
    CIFAR10-DVS split with fraction 0.9."""
    labels = np.asarray(labels)
    head = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        head.append(members[: int(round(fraction * members.size))])
    head_idx = np.sort(np.concatenate(head)) if head else np.empty(0, np.int64)
    return head_idx, np.setdiff1d(np.arange(labels.size), head_idx)


@dataclass(frozen=True)
class Splits:
    """Train / validation / test views of one dataset, and how they were made."""

    train: EventDataset
    validation: EventDataset
    test: EventDataset
    preset: DatasetPreset
    description: str

    def summary(self) -> dict[str, Any]:
        """Sizes and rule, for logs and result tables."""
        return {
            "dataset": self.preset.name,
            "rule": self.description,
            "train": len(self.train),
            "validation": len(self.validation),
            "test": len(self.test),
        }

    def frames(
        self, framing: Framing, augment: RandomTranslate | None = None, seed: int = 0
    ) -> tuple[FramesDataset, FramesDataset, FramesDataset]:
        """Torch-ready train, validation and test sets; `augment` applies to train only."""
        return (
            FramesDataset(self.train, framing, augment, seed),
            FramesDataset(self.validation, framing),
            FramesDataset(self.test, framing),
        )


def load_splits(
    name: str,
    root: str | PathLike[str] | None = None,
    *,
    seed: int = 0,
    validation: float = 0.1,
    test: float = 0.1,
    download: bool = False,
    reader: Reader | None = None,
) -> Splits:
    """The dataset `name` (a key of `PRESETS`) split into train, validation and test.

    - "nmnist": `root` holds N-MNIST. With `Train/` and `Test/` (official layout) the test set is
      `Test/`. Otherwise (e.g. `nmnist_1k/`, whose only part is `train/`) the samples are split
      stratified by class: `test` and `validation` are fractions of the whole (80/10/10 by default).
    - "emulated-digits": generated (seed 0), or read from `root` if given (a `write_recordings`
      folder); stratified 80/10/10 like the above.
    - "cifar10-dvs", "ncaltech101": test = the last 10% of each class in file order.
    - "dvs-gesture": test = tonic's test part (users 24-29).
    Where the test set is fixed, `validation` is the fraction of the training part held out,
    stratified by class. All shuffles use `seed`; model selection must use the validation split.
    """
    preset = get_preset(name)
    if name in ("nmnist", "emulated-digits"):
        if name == "emulated-digits" and root is None:
            dataset: EventDataset = EmulatedDigits()
            parts = None
        else:
            if root is None:
                raise ConfigError(f"dataset {name!r} needs a root folder")
            parts = _nmnist_parts(Path(root), reader)
            dataset = parts[0]
        if parts is not None and parts[1] is not None:
            val_idx, train_idx = stratified_split(dataset.labels, [validation], seed)
            return _splits(preset, dataset, train_idx, val_idx, parts[1], validation, seed)
        test_idx, val_idx, train_idx = stratified_split(dataset.labels, [test, validation], seed)
        return Splits(
            dataset.subset(train_idx),
            dataset.subset(val_idx),
            dataset.subset(test_idx),
            preset,
            f"stratified by class, validation {validation:g} and test {test:g} of all "
            f"{len(dataset)} samples, seed {seed}",
        )
    if name == "dvs-gesture":
        if root is None:
            raise ConfigError("dataset 'dvs-gesture' needs a root folder (tonic's save_to)")
        train = TonicDataset(name, root, "train", download=download)
        test_part = TonicDataset(name, root, "test", download=download)
        val_idx, train_idx = stratified_split(train.labels, [validation], seed)
        return _splits(preset, train, train_idx, val_idx, test_part, validation, seed)
    if root is None:
        raise ConfigError(f"dataset {name!r} needs a root folder (tonic's save_to)")
    dataset = TonicDataset(name, root, "all", download=download)
    head, tail = first_per_class(dataset.labels, 0.9)
    train_all = dataset.subset(head)
    val_idx, train_idx = stratified_split(train_all.labels, [validation], seed)
    return _splits(preset, train_all, train_idx, val_idx, dataset.subset(tail), validation, seed)


def _nmnist_parts(root: Path, reader: Reader | None) -> tuple[EventFolder, EventFolder | None]:
    """(training folder, test folder or None) of an N-MNIST-like root."""
    subfolders = {p.name.lower() for p in root.iterdir() if p.is_dir()} if root.is_dir() else set()
    if {"train", "test"} <= subfolders:
        return EventFolder(root, "train", reader=reader), EventFolder(root, "test", reader=reader)
    if "train" in subfolders and not (root / LABELS_FILE).is_file():
        return EventFolder(root, "train", reader=reader), None
    return EventFolder(root, reader=reader), None


def _splits(
    preset: DatasetPreset,
    train_all: EventDataset,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    test: EventDataset,
    validation: float,
    seed: int,
) -> Splits:
    rule = f"{preset.split}; validation {validation:g} of the training part, seed {seed}"
    return Splits(train_all.subset(train_idx), train_all.subset(val_idx), test, preset, rule)


# --- augmentation ---------------------------------------------------------------------------------


def translate_frames(frames: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Frames [..., H, W] moved by (dx, dy) pixels: what leaves is lost, what is uncovered is 0."""
    out = np.zeros_like(frames)
    height, width = frames.shape[-2:]
    if abs(dx) < width and abs(dy) < height:
        out[..., max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)] = frames[
            ..., max(-dy, 0) : height + min(-dy, 0), max(-dx, 0) : width + min(-dx, 0)
        ]
    return out


@dataclass(frozen=True)
class RandomTranslate:
    """Training augmentation: shift all frames of a sample by one random offset, zero fill.

    dx and dy are drawn uniformly from [-max_shift_px, max_shift_px] (frame pixels). It acts on
    frames [T, P, H, W], after framing, exactly as the paper does. Shifting events before framing
    would look equivalent but is not: frames anchored at a sample's first event would move in time
    whenever that event is pushed off the sensor. The generator is passed in so `FramesDataset`
    can make every shift a function of (seed, epoch, sample), keeping runs with several workers or
    processes reproducible.
    """

    max_shift_px: int = 25

    def __post_init__(self) -> None:
        if self.max_shift_px < 0:
            raise ConfigError(f"RandomTranslate.max_shift_px must be >= 0, got {self.max_shift_px}")

    def __call__(self, frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        dx, dy = rng.integers(-self.max_shift_px, self.max_shift_px + 1, size=2)
        return translate_frames(frames, int(dx), int(dy))


# --- torch adapter --------------------------------------------------------------------------------


class FramesDataset:
    """Map-style dataset for `torch.utils.data.DataLoader`: `(frames [T,P,H,W] float32, label)`.

    `framing(events, sensor_size)` makes the frames; pass the pipeline's own framing with the
    checkpoint's window parameters. `augment` (training only) gets a generator seeded from
    `(seed, epoch, index)`; call `set_epoch` each epoch for fresh shifts. torch is imported on
    first use only.
    """

    def __init__(
        self,
        dataset: EventDataset,
        framing: Framing,
        augment: RandomTranslate | None = None,
        seed: int = 0,
    ) -> None:
        self.dataset = dataset
        self.framing = framing
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    @property
    def labels(self) -> np.ndarray:
        return self.dataset.labels

    @property
    def classes(self) -> tuple[str, ...]:
        return self.dataset.classes

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def frames(self, index: int) -> np.ndarray:
        """The float32 frames of sample `index`, as numpy."""
        events = self.dataset.load(index)
        frames = np.asarray(self.framing(events, self.dataset.sensor_size))
        if frames.ndim != 4:
            raise EventDataError(
                f"{self.dataset.names[index]}: framing returned shape {frames.shape}, "
                "expected [T, P, H, W]"
            )
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index % len(self)])
            frames = self.augment(frames, rng)
        return np.ascontiguousarray(frames, dtype=np.float32)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        import torch

        return torch.from_numpy(self.frames(index)), int(self.dataset.labels[index])
