"""Checkpoints: a directory with `weights.safetensors` and `config.json`. Nothing is unpickled.

`config.json` holds the network recipe (`StepNet.spec`: architecture, its keyword arguments with
the neuron parameters, whether BatchNorm is folded), the SHA-256 of the weights, and what the
pipeline needs around the network: timesteps T, class names, sensor size, the windowing parameters
(an opaque mapping owned by the binning code), the calibrated cutoff rule (β[t] and ε) and a model
id. Anything malformed or mismatched raises `CheckpointError` naming the file and the problem.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from spikecut.errors import CheckpointError, ConfigError
from spikecut.models.architectures import build_from_spec
from spikecut.models.cutoff import CutoffRule, rule_from_dict
from spikecut.models.network import StepNet

FORMAT = "spikecut-checkpoint"
VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "config.json"
MAX_CONFIG_BYTES = 16 * 1024 * 1024


@dataclass
class CheckpointConfig:
    """Everything but the weights. `sensor_size` is (width, height) of the event frames the
    network expects; `windowing` is whatever the binning stage needs to rebuild its frames;
    `cutoff` is `rule.to_dict()`; `extra` is free-form JSON (dataset, accuracy, training run).
    `model_id` is filled on save (architecture + weights hash) when left empty."""

    timesteps: int
    class_names: list[str]
    sensor_size: tuple[int, int] | None = None
    windowing: dict[str, Any] = field(default_factory=dict)
    cutoff: dict[str, Any] | None = None
    model_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def cutoff_rule(self) -> CutoffRule | None:
        return None if self.cutoff is None else rule_from_dict(self.cutoff)

    def check(self, net: StepNet) -> None:
        """Raise ConfigError if this config contradicts `net` or itself."""
        if not isinstance(self.timesteps, int) or self.timesteps < 1:
            raise ConfigError(f"timesteps={self.timesteps!r}: must be a positive integer")
        if not isinstance(self.class_names, list) or not all(
            isinstance(c, str) for c in self.class_names
        ):
            raise ConfigError(f"class_names={self.class_names!r}: must be a list of strings")
        if len(self.class_names) != net.num_classes:
            raise ConfigError(
                f"class_names has {len(self.class_names)} names but the network has "
                f"{net.num_classes} outputs"
            )
        if self.sensor_size is not None and (
            len(self.sensor_size) != 2
            or not all(isinstance(v, int) and v > 0 for v in self.sensor_size)
        ):
            raise ConfigError(f"sensor_size={self.sensor_size!r}: must be (width, height)")
        if not isinstance(self.windowing, dict) or not isinstance(self.extra, dict):
            raise ConfigError("windowing and extra must be mappings")
        rule = self.cutoff_rule()
        if rule is not None and rule.timesteps != self.timesteps:
            raise ConfigError(
                f"cutoff rule {self.cutoff.get('rule')!r} covers {rule.timesteps} timesteps but "
                f"the checkpoint has timesteps={self.timesteps}"
            )


def save_checkpoint(path: str | os.PathLike[str], net: StepNet, config: CheckpointConfig) -> Path:
    """Write `net` and `config` into directory `path` (created if needed); returns the directory.

    Files are written under temporary names and renamed, so a crash never leaves a half-written
    checkpoint behind a valid name. `config.model_id` is filled in if empty.
    """
    directory = Path(path)
    config.check(net)
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    weights = save_safetensors(tensors, metadata={"format": FORMAT})
    digest = hashlib.sha256(weights).hexdigest()
    if not config.model_id:
        config.model_id = f"{net.spec['arch']}-{digest[:12]}"
    document = {
        "format": FORMAT,
        "version": VERSION,
        "model": net.spec,
        "weights": {"file": WEIGHTS_FILE, "sha256": digest},
        "model_id": config.model_id,
        "timesteps": config.timesteps,
        "class_names": config.class_names,
        "sensor_size": None if config.sensor_size is None else list(config.sensor_size),
        "windowing": config.windowing,
        "cutoff": config.cutoff,
        "extra": config.extra,
    }
    try:
        text = json.dumps(document, indent=2, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"checkpoint config is not plain JSON: {exc}") from None
    directory.mkdir(parents=True, exist_ok=True)
    for name, payload in ((WEIGHTS_FILE, weights), (CONFIG_FILE, text.encode())):
        tmp = directory / f".{name}.tmp"
        tmp.write_bytes(payload)
        os.replace(tmp, directory / name)
    return directory


def _field(document: dict[str, Any], key: str, kind: type | tuple[type, ...], where: Path) -> Any:
    if key not in document:
        raise CheckpointError(f"{where}: missing field {key!r}")
    value = document[key]
    if not isinstance(value, kind):
        raise CheckpointError(f"{where}: field {key!r} has the wrong type ({value!r})")
    return value


def read_config(path: str | os.PathLike[str]) -> tuple[dict[str, Any], CheckpointConfig]:
    """Parse and validate `config.json` of checkpoint directory `path` (no weights, no torch
    model): returns the network spec and the config."""
    where = Path(path) / CONFIG_FILE
    if not Path(path).is_dir():
        raise CheckpointError(f"{path}: not a checkpoint directory")
    try:
        if where.stat().st_size > MAX_CONFIG_BYTES:
            raise CheckpointError(f"{where}: larger than {MAX_CONFIG_BYTES} bytes")
        document = json.loads(where.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{where}: missing") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise CheckpointError(f"{where}: expected a JSON object")
    if document.get("format") != FORMAT:
        raise CheckpointError(f"{where}: format is {document.get('format')!r}, not {FORMAT!r}")
    if document.get("version") != VERSION:
        raise CheckpointError(
            f"{where}: version {document.get('version')!r} is not supported (expected {VERSION})"
        )
    spec = _field(document, "model", dict, where)
    _field(spec, "arch", str, where)
    _field(spec, "kwargs", dict, where)
    weights = _field(document, "weights", dict, where)
    _field(weights, "sha256", str, where)
    sensor = _field(document, "sensor_size", (list, type(None)), where)
    config = CheckpointConfig(
        timesteps=_field(document, "timesteps", int, where),
        class_names=_field(document, "class_names", list, where),
        sensor_size=None if sensor is None else tuple(sensor),
        windowing=_field(document, "windowing", dict, where),
        cutoff=_field(document, "cutoff", (dict, type(None)), where),
        model_id=_field(document, "model_id", str, where),
        extra=_field(document, "extra", dict, where),
    )
    spec = {**spec, "weights_sha256": weights["sha256"]}
    return spec, config


def load_checkpoint(
    path: str | os.PathLike[str], *, device: str | torch.device = "cpu"
) -> tuple[StepNet, CheckpointConfig]:
    """Rebuild the network of checkpoint directory `path` with its weights, in eval mode."""
    directory = Path(path)
    spec, config = read_config(directory)
    expected_sha = spec.pop("weights_sha256")
    try:
        net = build_from_spec(spec)
        config.check(net)
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{directory / CONFIG_FILE}: {exc}") from None

    weights_path = directory / WEIGHTS_FILE
    try:
        payload = weights_path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{weights_path}: missing") from None
    if hashlib.sha256(payload).hexdigest() != expected_sha:
        raise CheckpointError(
            f"{weights_path}: SHA-256 differs from the one in {CONFIG_FILE} "
            f"({len(payload)} bytes; truncated, corrupted or from another checkpoint)"
        )
    try:
        tensors = load_safetensors(payload)
    except SafetensorError as exc:
        raise CheckpointError(f"{weights_path}: not a valid safetensors file ({exc})") from None

    expected = net.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [
        f"{k} {list(tensors[k].shape)} (model: {list(v.shape)})"
        for k, v in expected.items()
        if k in tensors and tensors[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"missing tensors {missing[:8]}{' …' if len(missing) > 8 else ''}")
    if unexpected:
        problems.append(f"unexpected tensors {unexpected[:8]}{' …' if len(unexpected) > 8 else ''}")
    if wrong:
        problems.append(f"wrong shapes {wrong[:8]}{' …' if len(wrong) > 8 else ''}")
    if problems:
        raise CheckpointError(
            f"{weights_path}: does not match architecture {spec['arch']!r}: " + "; ".join(problems)
        )
    net.load_state_dict(tensors)
    return net.to(device).eval(), config
