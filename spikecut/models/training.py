"""Training an SNN for the cutoff: data, loop, resume, model selection, Top-K calibration.

    result = train(TrainConfig(dataset="nmnist", root="../shared/data/nmnist_1k", alpha=0.002))
    net, config = load_checkpoint(result.checkpoint)   # BN folded, β[t] in config.cutoff

Methods (method.md §4.1): "direct" trains the SNN (LIF) through time with the TET or mean loss;
"conversion" trains a QCFS ANN (T = 1: one frame per sample) and converts it to an IF SNN that
integrates the frames one window per step. `alpha > 0` adds the RCS regulariser (§3).

What the ANN of a conversion is fed (`ann_frames`, see `ann_input`): its IF twin's firing rates
after t steps approximate the ANN on the mean of the first t windows, and the cutoff reads the
SNN at every t. "prefix" (the default) trains the ANN on the mean of the first t windows with t
drawn uniformly from 1..T per sample and epoch, so the ANN is right on what the SNN has seen at
every step; "mean" (the plain setting) trains on the mean of all T windows only, and its SNN
then sees unfamiliar inputs until t nears T (see docs/RESULTS.md for the measured difference).

Frames come from `spikecut.models.data` with the `WindowSpec` stored in the checkpoint, so the
streaming pipeline sees exactly the training frames. Splits come from `load_splits`: model
selection uses the validation split only. The best epoch is chosen on validation accuracy at T
(ties: the mean accuracy over all t, which favours networks that are right early); its network is
BN-folded and calibrated (Top-K thresholds β[t] on the training split, without augmentation, with
dropout 0.3 after every spiking layer; one β vector per ε of the sweep in `extra["calibration"]`).

Run directory (`out_dir`):
- `train_config.json`: the `TrainConfig`; a resume must use the same one (the cosine schedule
  depends on `epochs`; use `stop_after` to split a run).
- `metrics.jsonl`: one JSON object per epoch (losses, accuracies, learning rate, seconds).
- `last/`: `state-<epoch>/` (training weights as a checkpoint + `trainer.pt` with the optimizer,
  scheduler, epoch and RNG state, loaded with `weights_only=True`) and `last.json` naming it;
  written completely before `last.json` is replaced, so a crash leaves the previous state.
- `best/`: the deployable network of the best epoch so far (unfolded, uncalibrated).
- `model/`: the final checkpoint (BN folded, calibrated).

Distributed: under `torchrun` every process runs `train` with the same config; see
`spikecut.models.distributed` for what makes N processes equal one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from spikecut.errors import ConfigError
from spikecut.models.architectures import ARCHITECTURES, build_model
from spikecut.models.checkpoint import (
    WEIGHTS_FILE,
    CheckpointConfig,
    load_checkpoint,
    save_checkpoint,
)
from spikecut.models.conversion import convert_to_snn
from spikecut.models.cutoff import (
    CALIBRATION_DROPOUT,
    TopKRule,
    accuracy_per_step,
    collect_outputs,
    evaluate_stops,
    oct_steps,
)
from spikecut.models.data import (
    FrameSet,
    augment_batch,
    dataset_splits,
    dataset_window_spec,
    frame_set,
    lazy_frames,
    ordered_batches,
)
from spikecut.models.distributed import (
    DistContext,
    gather_rows,
    init_distributed,
    shutdown_distributed,
    use_global_batchnorm,
)
from spikecut.models.evaluation import EPSILONS, calibrate, choose_on_validation
from spikecut.models.losses import mean_ce_loss, tet_loss
from spikecut.models.network import StepNet, fold_batchnorm
from spikecut.models.neurons import ActivationRecords, SpikeRecord, record_activations
from spikecut.models.rcs import (
    EPS,
    reduce_penalties,
    snn_correct_mask,
    snn_penalty,
)
from spikecut.pipeline.binning import WindowSpec
from spikecut.sources.datasets import (
    DatasetPreset,
    FramesDataset,
    RandomTranslate,
    Splits,
    get_preset,
)

METHODS = ("direct", "conversion")
LOSSES = ("tet", "mean")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "constant")
CACHES = ("memory", "lazy")
ANN_FRAMES = ("prefix", "mean")
PRECISIONS = ("float32", "float64")
#: The paper's network per dataset (method §4.3), and the small net for 34x34 digits.
DEFAULT_ARCH = {
    "nmnist": "nmnist_small",
    "emulated-digits": "nmnist_small",
    "cifar10-dvs": "vgg_cifar10dvs",
    "dvs-gesture": "vgg_gesture",
    "ncaltech101": "vgg_ncaltech101",
}


@dataclass
class TrainConfig:
    """One training run. `arch`, `timesteps`, `window_us` and `max_shift_px` default to the
    dataset preset's (`DEFAULT_ARCH`, T, span / T, the preset's translation). `batch_size` is the
    global batch (split evenly over processes). `limit` keeps the first n samples of each split
    (tests, smoke runs). `epsilon` is the tolerance of the cutoff rule stored as the checkpoint's
    default; None picks the cheapest ε of the sweep that loses no accuracy on the validation
    split. `precision` "float64" trains in double precision (the final checkpoint is float32
    either way): spikes turn rounding differences into different spikes, so comparing two ways
    of computing the same run (N processes against one) needs it. `ann_frames` is what a
    conversion's ANN is trained on ("prefix" or "mean", see the module docstring); it stays None
    for direct training, and a conversion config saved before the field existed reads as "mean"
    (what those runs were trained on)."""

    dataset: str = "emulated-digits"
    root: str | None = None
    arch: str | None = None
    method: str = "direct"
    loss: str = "tet"
    qcfs_levels: int = 4
    ann_frames: str | None = None
    alpha: float = 0.0
    timesteps: int | None = None
    window_us: int | None = None
    epochs: int = 30
    batch_size: int = 32
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    seed: int = 0
    split_seed: int = 0
    validation: float = 0.1
    test: float = 0.1
    max_shift_px: int | None = None
    limit: int | None = None
    epsilon: float | None = None
    epsilons: tuple[float, ...] = EPSILONS
    calibration_dropout: float = CALIBRATION_DROPOUT
    cache: str = "memory"
    workers: int = 0
    precision: str = "float32"
    device: str = "auto"
    out_dir: str = "runs/train"

    def __post_init__(self) -> None:
        self.epsilons = tuple(float(e) for e in self.epsilons)
        checks = (
            ("method", self.method, METHODS),
            ("loss", self.loss, LOSSES),
            ("optimizer", self.optimizer, OPTIMIZERS),
            ("schedule", self.schedule, SCHEDULES),
            ("cache", self.cache, CACHES),
            ("precision", self.precision, PRECISIONS),
        )
        for name, value, allowed in checks:
            if value not in allowed:
                raise ConfigError(f"TrainConfig.{name}={value!r}: expected one of {allowed}")
        if self.method == "conversion":
            if self.ann_frames is None:
                self.ann_frames = ANN_FRAMES[0]
            if self.ann_frames not in ANN_FRAMES:
                raise ConfigError(
                    f"TrainConfig.ann_frames={self.ann_frames!r}: expected one of {ANN_FRAMES}"
                )
        elif self.ann_frames is not None:
            raise ConfigError(
                f"TrainConfig.ann_frames={self.ann_frames!r} applies to method 'conversion' only"
            )
        get_preset(self.dataset)
        if self.arch is None:
            self.arch = DEFAULT_ARCH[self.dataset]
        if self.arch not in ARCHITECTURES:
            raise ConfigError(f"unknown architecture {self.arch!r}; known: {sorted(ARCHITECTURES)}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.alpha < 0 or not math.isfinite(self.alpha):
            raise ConfigError(f"TrainConfig.alpha must be >= 0, got {self.alpha}")
        if self.epsilon is not None and self.epsilon not in self.epsilons:
            self.epsilons = tuple(sorted({*self.epsilons, float(self.epsilon)}))

    @property
    def preset(self) -> DatasetPreset:
        return get_preset(self.dataset)

    @property
    def steps(self) -> int:
        return int(self.timesteps or self.preset.timesteps)

    @property
    def shift_px(self) -> int:
        return int(self.preset.max_shift_px if self.max_shift_px is None else self.max_shift_px)

    def window_spec(self) -> WindowSpec:
        return dataset_window_spec(self.preset, self.steps, window_us=self.window_us)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["epsilons"] = list(self.epsilons)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"TrainConfig has no field(s) {unknown}")
        if data.get("method") == "conversion" and "ann_frames" not in data:
            data = {**data, "ann_frames": "mean"}  # saved before prefix training existed
        return cls(**data)


@dataclass
class TrainResult:
    run_dir: Path
    checkpoint: Path | None  # the final model (None on processes other than rank 0, or stopped)
    best_epoch: int
    best_validation: dict[str, Any]
    epochs_done: int
    history: list[dict[str, Any]] = field(default_factory=list)


# --- data ----------------------------------------------------------------------------------------


def make_splits(config: TrainConfig) -> Splits:
    """The dataset split as the config says, cut to `limit` samples per split if set."""
    return dataset_splits(
        config.dataset,
        config.root,
        seed=config.split_seed,
        validation=config.validation,
        test=config.test,
        limit=config.limit,
    )


def split_frames(
    config: TrainConfig, splits: Splits, part: str, *, progress: bool = False
) -> FrameSet | FramesDataset:
    dataset = getattr(splits, part)
    if config.cache == "lazy":
        return lazy_frames(dataset, config.window_spec(), config.steps)
    return frame_set(dataset, config.window_spec(), config.steps, progress=progress)


def epoch_batches(
    n: int, batch_size: int, seed: int, epoch: int, context: DistContext
) -> list[list[int]]:
    """This process's share of each global batch of the epoch.

    One permutation per (seed, epoch), cut into global batches of `batch_size` (the incomplete
    last one is dropped, so every step has the same global batch); process r takes positions
    r, r + world, ... of each. The union over processes is the single-process batch, whatever the
    world size. (torch's DistributedSampler pads the epoch by repeating samples instead, which a
    single process would not do.)
    """
    if batch_size % context.world:
        raise ConfigError(
            f"batch_size {batch_size} is not divisible by the {context.world} processes"
        )
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n, generator=generator).tolist()
    steps = n // batch_size
    if steps == 0:
        raise ConfigError(f"batch_size {batch_size} is larger than the training set ({n})")
    return [
        order[k * batch_size : (k + 1) * batch_size][context.rank :: context.world]
        for k in range(steps)
    ]


# --- losses --------------------------------------------------------------------------------------


def global_rcs_loss(records: ActivationRecords, outputs: Tensor, labels: Tensor) -> Tensor:
    """`rcs_loss` over the global batch of all processes (identical in a single process).

    Per-sample penalties are computed locally and gathered, so the max over the batch sees every
    process's samples. The ANN form's numerator is the peak activation over the whole batch: each
    process contributes its per-sample peaks.
    """
    layers = records.layers
    if not layers:
        raise ConfigError("RCS: no activations were recorded")
    if all(isinstance(rec, SpikeRecord) for rec in layers):
        penalties = torch.stack([snn_penalty(rec) for rec in layers], dim=1)
        mask = snn_correct_mask(outputs, labels)
        return reduce_penalties(gather_rows(penalties), _gather_mask(mask))
    # ANN (QCFS) form, as rcs.ann_penalty: peak of ReLU(x) over the batch / per-sample RMS.
    peaks, rms = [], []
    for rec in layers:
        x = torch.relu(rec.x).transpose(0, 1).flatten(1)  # [B, T·F]
        peaks.append(x.max(dim=1).values)
        rms.append(torch.sqrt((x * x).mean(dim=1) + EPS))
    peak = gather_rows(torch.stack(peaks, dim=1)).max(dim=0).values  # [L]
    penalties = peak[None, :] / gather_rows(torch.stack(rms, dim=1))
    mask = (outputs.mean(dim=0).argmax(dim=-1) == labels).detach()
    return reduce_penalties(penalties, _gather_mask(mask))


def _gather_mask(mask: Tensor) -> Tensor:
    # as bytes: not every backend (NCCL) reduces booleans
    return gather_rows(mask.to(torch.uint8)).bool()


def ann_input(frames: Tensor, lengths: Tensor | None = None) -> Tensor:
    """What the QCFS ANN of a conversion sees: one frame per sample, [1, B, P, H, W] from
    [T, B, P, H, W] (T = 1, the paper's ANN setting). Without `lengths`, each sample's mean frame
    over all T windows; with `lengths` [B] (each in 1..T), the mean of its first lengths[b]
    windows.

    Its IF twin integrates the same frames one window per step: after t steps a layer's input has
    summed t windows, so its neurons fire about t·QCFS(mean of those windows)/λ times, and the
    SNN's cumulative output at t follows the ANN on the mean of the first t windows. Training on
    such prefix means (`prefix_lengths`) teaches the ANN what the SNN sees at every step."""
    if lengths is None:
        return frames.mean(dim=0, keepdim=True)
    steps = frames.shape[0]
    lengths = lengths.to(frames.device)
    if lengths.shape != frames.shape[1:2] or lengths.min() < 1 or lengths.max() > steps:
        raise ConfigError(f"ann_input: lengths must be [B] values in 1..{steps}, got {lengths}")
    shape = (1, -1, *([1] * (frames.dim() - 2)))
    keep = torch.arange(steps, device=frames.device)[:, None] < lengths[None, :]  # [T, B]
    keep = keep.to(frames.dtype).reshape(steps, *shape[1:])
    return (frames * keep).sum(dim=0, keepdim=True) / lengths.to(frames.dtype).reshape(shape)


def prefix_lengths(indices: Sequence[int], steps: int, seed: int, epoch: int) -> Tensor:
    """A prefix length per sample, uniform in 1..steps, from a generator seeded by (seed, epoch,
    sample index) as `augment_batch` does (a separate stream from its shifts): the same lengths
    whatever the number of processes or resumes."""
    return torch.tensor(
        [
            int(np.random.default_rng([seed, epoch, int(i), 1]).integers(1, steps + 1))
            for i in indices
        ],
        dtype=torch.long,
    )


def task_loss(config: TrainConfig, outputs: Tensor, labels: Tensor) -> Tensor:
    if config.method == "conversion" or config.loss == "mean":
        return mean_ce_loss(outputs, labels)
    return tet_loss(outputs, labels)


# --- the network ---------------------------------------------------------------------------------


def build_network(config: TrainConfig, frame_shape: tuple[int, int, int], classes: int) -> StepNet:
    torch.manual_seed(config.seed)
    if config.method == "conversion":
        return build_model(
            config.arch,
            flavour="ann",
            input_shape=frame_shape,
            num_classes=classes,
            qcfs_levels=config.qcfs_levels,
        )
    return build_model(config.arch, input_shape=frame_shape, num_classes=classes)


def deployable(config: TrainConfig, net: StepNet) -> StepNet:
    """The SNN that will run: the trained SNN itself, or the IF twin of the QCFS ANN."""
    return convert_to_snn(net) if config.method == "conversion" else net


def make_optimizer(
    config: TrainConfig, net: nn.Module
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    if config.optimizer == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(
            net.parameters(),
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
    else:
        optimizer = torch.optim.Adam(
            net.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
    if config.schedule == "cosine":
        scheduler: torch.optim.lr_scheduler.LRScheduler = (
            torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
        )
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    return optimizer, scheduler


# --- validation ----------------------------------------------------------------------------------


def _outputs(
    net: StepNet,
    data: FrameSet | FramesDataset,
    batch_size: int,
    transform: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Cumulative outputs and labels of `net` on `data`, frames in the network's precision."""
    dtype = next(net.parameters()).dtype
    transform = transform or (lambda frames: frames)
    batches = ((transform(f.to(dtype)), labels) for f, labels in ordered_batches(data, batch_size))
    return collect_outputs(net, batches)


def validation_metrics(net: StepNet, data: FrameSet | FramesDataset, batch_size: int) -> dict:
    """Accuracy at every t, at T, its mean over t, and the mean OCT of `net` on `data`."""
    y, labels = _outputs(net, data, batch_size)
    per_step = accuracy_per_step(y, labels)
    return {
        "acc_T": float(per_step[-1]),
        "acc_mean_t": float(per_step.mean()),
        "acc_per_t": [round(float(a), 6) for a in per_step],
        "oct_mean": float(oct_steps(y, labels).double().mean()),
    }


def _score(metrics: dict[str, Any]) -> tuple[float, float]:
    return (metrics["acc_T"], metrics["acc_mean_t"])


# --- run directory -------------------------------------------------------------------------------


def _state_config(config: TrainConfig, classes: tuple[str, ...], epoch: int) -> CheckpointConfig:
    preset = config.preset
    return CheckpointConfig(
        timesteps=config.steps,
        class_names=list(classes),
        sensor_size=(preset.width, preset.height),
        windowing=config.window_spec().to_dict(),
        extra={"epoch": epoch, "training": config.to_dict()},
    )


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _save_last(
    run_dir: Path,
    net: StepNet,
    config: TrainConfig,
    classes: tuple[str, ...],
    epoch: int,
    trainer: dict[str, Any],
) -> None:
    last = run_dir / "last"
    last.mkdir(parents=True, exist_ok=True)
    state_dir = last / f"state-{epoch}"
    if state_dir.exists():
        shutil.rmtree(state_dir)
    save_checkpoint(state_dir, net, _state_config(config, classes, epoch))
    torch.save(trainer, state_dir / "trainer.pt")
    _write_json(last / "last.json", {"epoch": epoch, "state": state_dir.name})
    for old in last.glob("state-*"):
        if old != state_dir:
            shutil.rmtree(old, ignore_errors=True)


def _load_last(run_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    pointer = run_dir / "last" / "last.json"
    if not pointer.is_file():
        return None
    state_dir = run_dir / "last" / json.loads(pointer.read_text())["state"]
    trainer = torch.load(state_dir / "trainer.pt", map_location="cpu", weights_only=True)
    return state_dir, trainer


def _check_resume_config(run_dir: Path, config: TrainConfig) -> None:
    path = run_dir / "train_config.json"
    if not path.is_file():
        return
    saved = TrainConfig.from_dict(json.loads(path.read_text())).to_dict()
    ours = config.to_dict()
    differ = sorted(k for k in ours if k != "out_dir" and saved.get(k) != ours[k])
    if differ:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {ours[k]!r}" for k in differ)
        raise ConfigError(
            f"{run_dir} holds a run with another configuration ({details}); "
            "use a new output directory"
        )


def _trim_log(path: Path, last_epoch: int) -> list[dict[str, Any]]:
    """Keep the log lines of epochs up to `last_epoch` (a crash may have logged one more)."""
    if not path.is_file():
        return []
    kept = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    kept = [row for row in kept if row["epoch"] <= last_epoch]
    path.write_text("".join(json.dumps(row) + "\n" for row in kept))
    return kept


# --- the loop ------------------------------------------------------------------------------------


def train(
    config: TrainConfig,
    *,
    stop_after: int | None = None,
    progress: bool = True,
    command: str | None = None,
    threads: int | None = None,
) -> TrainResult:
    """Train, select on validation, calibrate and save (see the module docstring).

    Resumes from `out_dir/last` if present. `stop_after` ends this call after that many epochs
    (a later call resumes); the final checkpoint is written once all `config.epochs` are done.
    `command` is recorded in the checkpoint (how to reproduce it). `threads` caps torch's CPU
    threads in this process.
    """
    context = init_distributed(config.device)
    try:
        return _train(config, context, stop_after, progress, command, threads)
    finally:
        shutdown_distributed(context)


def _train(
    config: TrainConfig,
    context: DistContext,
    stop_after: int | None,
    progress: bool,
    command: str | None,
    threads: int | None,
) -> TrainResult:
    from tqdm.auto import tqdm

    if threads:
        torch.set_num_threads(threads)
    show = progress and context.main
    run_dir = Path(config.out_dir)
    if context.main:
        _check_resume_config(run_dir, config)
    splits = make_splits(config)
    train_data = split_frames(config, splits, "train", progress=show)
    val_data = split_frames(config, splits, "validation", progress=show)
    classes = tuple(splits.train.classes)
    spec = config.window_spec()
    frame_shape = spec.frame_shape((config.preset.width, config.preset.height))

    dtype = getattr(torch, config.precision)
    net = build_network(config, frame_shape, len(classes)).to(context.device, dtype)
    if context.distributed:
        use_global_batchnorm(net)  # before the optimizer takes the parameters
    optimizer, scheduler = make_optimizer(config, net)
    start_epoch, best_score, best_epoch, best_metrics = 0, (-1.0, -1.0), -1, {}
    history: list[dict[str, Any]] = []
    resumed = _load_last(run_dir)
    if resumed is not None:
        state_dir, trainer = resumed
        net.load_state_dict(load_file(state_dir / WEIGHTS_FILE, device=str(context.device)))
        optimizer.load_state_dict(trainer["optimizer"])
        scheduler.load_state_dict(trainer["scheduler"])
        torch.set_rng_state(trainer["torch_rng"])
        start_epoch = int(trainer["epoch"]) + 1
        best_score = tuple(trainer["best_score"])
        best_epoch = int(trainer["best_epoch"])
        best_metrics = json.loads(trainer["best_metrics"])
        if context.main:
            history = _trim_log(run_dir / "metrics.jsonl", start_epoch - 1)
    if context.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_json(run_dir / "train_config.json", config.to_dict())
        if resumed is None:
            (run_dir / "metrics.jsonl").write_text("")

    model: nn.Module = net
    if context.distributed:
        device_ids = [context.device.index] if context.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(net, device_ids=device_ids)

    augment = RandomTranslate(config.shift_px) if config.shift_px else None
    epochs_run = 0
    for epoch in range(start_epoch, config.epochs):
        if stop_after is not None and epochs_run >= stop_after:
            break
        started = time.perf_counter()
        net.train()
        batches = epoch_batches(len(train_data), config.batch_size, config.seed, epoch, context)
        loader = torch.utils.data.DataLoader(
            train_data, batch_sampler=batches, num_workers=config.workers
        )
        sums = torch.zeros(5, dtype=torch.float64)  # loss·n, task·n, rcs·n, correct, n
        bar = tqdm(
            zip(batches, loader, strict=True),
            total=len(batches),
            desc=f"epoch {epoch + 1}/{config.epochs}",
            unit="batch",
            disable=not show,
            leave=False,
        )
        for indices, (frames, labels) in bar:
            frames = augment_batch(frames, indices, augment, config.seed, epoch)
            x = frames.transpose(0, 1).to(context.device, dtype, non_blocking=True)
            labels = labels.to(context.device)
            recording = record_activations() if config.alpha > 0 else contextlib.nullcontext()
            with recording as records:
                if config.method == "conversion":
                    lengths = None
                    if config.ann_frames == "prefix":
                        lengths = prefix_lengths(indices, config.steps, config.seed, epoch)
                    outputs = model(ann_input(x, lengths))
                else:
                    outputs = model(x)
            task = task_loss(config, outputs, labels)
            reg = global_rcs_loss(records, outputs, labels) if config.alpha > 0 else task * 0
            loss = task + config.alpha * reg
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            n = labels.shape[0]
            with torch.no_grad():
                correct = (outputs.sum(dim=0).argmax(dim=-1) == labels).sum()
            sums += torch.tensor(
                [loss.item() * n, task.item() * n, reg.item() * n, correct.item(), n],
                dtype=torch.float64,
            )
            bar.set_postfix(loss=f"{loss.item():.4f}")
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        if context.distributed:
            totals = sums.to(context.device)  # NCCL reduces GPU tensors only
            torch.distributed.all_reduce(totals)
            sums = totals.cpu()
        epochs_run += 1
        if context.main:
            metrics = validation_metrics(deployable(config, net), val_data, config.batch_size)
            if config.method == "conversion":
                ann = validation_metrics_ann(net, val_data, config.batch_size)
                metrics["ann_acc"] = ann
            improved = _score(metrics) > best_score
            if improved:
                best_score, best_epoch, best_metrics = _score(metrics), epoch, metrics
                best_net = deployable(config, net)
                save_checkpoint(run_dir / "best", best_net, _state_config(config, classes, epoch))
            count = float(sums[4])
            row = {
                "epoch": epoch,
                "lr": lr,
                "loss": float(sums[0]) / count,
                "task_loss": float(sums[1]) / count,
                "rcs": float(sums[2]) / count,
                "train_acc": float(sums[3]) / count,
                **{f"val_{k}": v for k, v in metrics.items()},
                "best": improved,
                "seconds": round(time.perf_counter() - started, 3),
            }
            history.append(row)
            with open(run_dir / "metrics.jsonl", "a") as log:
                log.write(json.dumps(row) + "\n")
            tqdm.write(
                f"epoch {epoch + 1}/{config.epochs}: loss {row['loss']:.4f} train "
                f"{row['train_acc']:.3f} val@T {metrics['acc_T']:.3f} "
                f"val mean-t {metrics['acc_mean_t']:.3f}{' *' if improved else ''} "
                f"({row['seconds']:.1f} s)"
            )
            trainer = {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "epoch": epoch,
                "torch_rng": torch.get_rng_state(),
                "best_score": list(best_score),
                "best_epoch": best_epoch,
                "best_metrics": json.dumps(best_metrics),
            }
            _save_last(run_dir, net, config, classes, epoch, trainer)
        if context.distributed:
            torch.distributed.barrier()

    done = start_epoch + epochs_run >= config.epochs
    checkpoint = None
    if context.main and done:
        checkpoint = finalize(config, run_dir, train_data, val_data, splits, command, progress)
    return TrainResult(
        run_dir, checkpoint, best_epoch, best_metrics, start_epoch + epochs_run, history
    )


def validation_metrics_ann(net: StepNet, data: FrameSet | FramesDataset, batch_size: int) -> float:
    """Accuracy of a QCFS ANN on each sample's mean frame over all T windows (what its SNN's
    rates approach at T)."""
    y, labels = _outputs(net, data, batch_size, ann_input)
    return float((y[-1].argmax(dim=-1) == labels).double().mean())


# --- calibration and the final checkpoint --------------------------------------------------------


def finalize(
    config: TrainConfig,
    run_dir: Path,
    train_data: FrameSet | FramesDataset,
    val_data: FrameSet | FramesDataset,
    splits: Splits,
    command: str | None,
    progress: bool = False,
) -> Path:
    """Fold BN into the best network, calibrate β[t] on the training split, write `model/`."""
    best, best_config = load_checkpoint(run_dir / "best")
    folded = fold_batchnorm(best)
    calibration = calibrate(
        folded,
        train_data,
        config.epsilons,
        dropout=config.calibration_dropout,
        seed=config.seed,
    )
    y, labels = collect_outputs(folded, ordered_batches(val_data, config.batch_size))
    if config.epsilon is None:
        epsilon = float(choose_on_validation(y, labels, calibration)["topk"]["rule"]["epsilon"])
    else:
        epsilon = float(config.epsilon)
    beta = calibration["beta"][config.epsilons.index(epsilon)]
    rule = TopKRule(beta, epsilon)
    stops = evaluate_stops(y, labels, rule.stop_steps(y))
    per_step = accuracy_per_step(y, labels)
    validation = {
        "acc_T": float(per_step[-1]),
        "acc_per_t": [round(float(a), 6) for a in per_step],
        "oct_mean": float(oct_steps(y, labels).double().mean()),
        "topk_acc": stops.accuracy,
        "topk_mean_steps": stops.mean_steps,
        "topk_reduction": stops.reduction,
        "epsilon_chosen_on_validation": config.epsilon is None,
    }
    spec = config.window_spec()
    checkpoint_config = CheckpointConfig(
        timesteps=config.steps,
        class_names=list(best_config.class_names),
        sensor_size=(config.preset.width, config.preset.height),
        windowing=spec.to_dict(),
        cutoff=rule.to_dict(),
        extra={
            "dataset": config.dataset,
            "splits": splits.summary(),
            "method": config.method,
            "loss": "mean" if config.method == "conversion" else config.loss,
            "alpha": config.alpha,
            "best_epoch": int(best_config.extra["epoch"]),
            "validation": validation,
            "calibration": calibration,
            "training": config.to_dict(),
            "command": command,
        },
    )
    return save_checkpoint(run_dir / "model", folded, checkpoint_config)
