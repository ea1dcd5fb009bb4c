import hashlib
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from spikecut.errors import CheckpointError, ConfigError
from spikecut.models import (
    CheckpointConfig,
    TopKRule,
    build_model,
    convert_to_snn,
    fold_batchnorm,
    load_checkpoint,
    read_config,
    save_checkpoint,
)
from spikecut.models.checkpoint import CONFIG_FILE, WEIGHTS_FILE

CLASSES = [str(i) for i in range(10)]


def trained_like(net):
    """Weights and BN statistics that differ from a fresh build, so a round trip is a real test."""
    torch.manual_seed(7)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        for name, b in net.named_buffers():
            if name.endswith("running_var"):
                b.uniform_(0.5, 1.5)
            elif name.endswith("running_mean"):
                b.normal_(0, 0.2)
    return net.eval()


def config(**overrides):
    base = {
        "timesteps": 4,
        "class_names": CLASSES,
        "sensor_size": (34, 34),
        "windowing": {"mode": "time", "window_us": 75000, "bins": 4},
        "cutoff": TopKRule([2.0, 1.5, 1.0, 0.0], epsilon=0.01).to_dict(),
        "extra": {"dataset": "nmnist_1k", "accuracy": 0.91},
    }
    return CheckpointConfig(**{**base, **overrides})


def frames(net, steps=4, batch=2):
    g = torch.Generator().manual_seed(3)
    return torch.poisson(torch.full((steps, batch, *net.input_shape), 1.0), g)


@pytest.mark.parametrize("variant", ["snn", "folded", "converted"])
def test_round_trip(tmp_path, variant):
    if variant == "converted":
        net = convert_to_snn(trained_like(build_model("nmnist_small", flavour="ann")))
    else:
        net = trained_like(build_model("nmnist_small"))
        if variant == "folded":
            net = fold_batchnorm(net)
    saved = save_checkpoint(tmp_path / "ckpt", net, config())
    assert sorted(p.name for p in saved.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    loaded, cfg = load_checkpoint(saved)
    assert not loaded.training and loaded.spec == net.spec
    x = frames(net)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))
    assert cfg.timesteps == 4 and cfg.class_names == CLASSES and cfg.sensor_size == (34, 34)
    assert cfg.windowing == {"mode": "time", "window_us": 75000, "bins": 4}
    assert cfg.extra["accuracy"] == 0.91
    rule = cfg.cutoff_rule()
    assert isinstance(rule, TopKRule) and rule.beta == [2.0, 1.5, 1.0, 0.0] and rule.epsilon == 0.01
    assert (
        cfg.model_id.startswith("nmnist_small-") and len(cfg.model_id) == len("nmnist_small-") + 12
    )
    spec, cfg_only = read_config(saved)
    assert spec["arch"] == "nmnist_small" and cfg_only.model_id == cfg.model_id
    if variant == "converted":
        assert [float(n.threshold) for n in loaded.neurons] == [
            float(n.threshold) for n in net.neurons
        ]


def test_config_json_is_plain_and_weights_are_safetensors(tmp_path):
    net = build_model("nmnist_small")
    save_checkpoint(tmp_path, net, config(model_id="my-model"))
    document = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert document["format"] == "spikecut-checkpoint" and document["version"] == 1
    assert document["model"]["kwargs"]["neuron"]["tau"] is None
    assert document["model_id"] == "my-model"
    assert set(load_file(tmp_path / WEIGHTS_FILE)) == set(net.state_dict())


def saved(tmp_path, **overrides):
    net = build_model("nmnist_small")
    save_checkpoint(tmp_path, net, config(**overrides))
    return tmp_path


def edit_config(path, change):
    document = json.loads((path / CONFIG_FILE).read_text())
    change(document)
    (path / CONFIG_FILE).write_text(json.dumps(document))


def test_truncated_weights(tmp_path):
    path = saved(tmp_path)
    data = (path / WEIGHTS_FILE).read_bytes()
    (path / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(path)


def test_weights_that_are_not_safetensors(tmp_path):
    path = saved(tmp_path)
    junk = b"\x80\x04pickle-not-welcome" * 4
    (path / WEIGHTS_FILE).write_bytes(junk)
    edit_config(path, lambda d: d["weights"].update(sha256=hashlib.sha256(junk).hexdigest()))
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        load_checkpoint(path)


def rewrite_weights(path, change):
    """Change the tensors and fix the recorded hash, as a mismatched export would look."""
    tensors = load_file(path / WEIGHTS_FILE)
    change(tensors)
    save_file(tensors, path / WEIGHTS_FILE)
    digest = hashlib.sha256((path / WEIGHTS_FILE).read_bytes()).hexdigest()
    edit_config(path, lambda d: d["weights"].update(sha256=digest))


def test_wrong_shapes(tmp_path):
    path = saved(tmp_path)
    rewrite_weights(path, lambda t: t.update({"body.5.weight": torch.zeros(10, 99)}))
    with pytest.raises(CheckpointError, match=r"wrong shapes \['body.5.weight \[10, 99\]"):
        load_checkpoint(path)


def test_missing_and_unexpected_tensors(tmp_path):
    path = saved(tmp_path)

    def change(tensors):
        del tensors["body.0.bn.running_var"]
        tensors["body.9.weight"] = torch.zeros(1)

    rewrite_weights(path, change)
    with pytest.raises(CheckpointError, match=r"missing tensors \['body.0.bn.running_var'\]"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match=r"unexpected tensors \['body.9.weight'\]"):
        load_checkpoint(path)


def test_unknown_architecture_and_bad_kwargs(tmp_path):
    path = saved(tmp_path)
    edit_config(path, lambda d: d["model"].update(arch="alexnet"))
    with pytest.raises(CheckpointError, match="unknown architecture 'alexnet'"):
        load_checkpoint(path)
    edit_config(path, lambda d: d["model"].update(arch="nmnist_small"))
    edit_config(path, lambda d: d["model"]["kwargs"]["neuron"].update(reset="sometimes"))
    with pytest.raises(CheckpointError, match="reset='sometimes'"):
        load_checkpoint(path)


def test_config_problems(tmp_path):
    path = saved(tmp_path)
    original = (path / CONFIG_FILE).read_text()
    cases = [
        (lambda d: d.pop("timesteps"), "missing field 'timesteps'"),
        (lambda d: d.update(version=99), "version 99"),
        (lambda d: d.update(format="pt"), "format"),
        (lambda d: d.update(class_names=["a", "b"]), "2 names but the network has 10"),
        (lambda d: d.update(timesteps=5), "covers 4 timesteps"),
        (lambda d: d.update(cutoff={"rule": "magic"}), "unknown cutoff rule"),
        (lambda d: d.update(sensor_size=[34]), "sensor_size"),
        (lambda d: d["model"].update(kwargs="x"), "field 'kwargs'"),
    ]
    for change, message in cases:
        (path / CONFIG_FILE).write_text(original)
        edit_config(path, change)
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(path)
    (path / CONFIG_FILE).write_text(original[:-20])
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(path)
    (path / CONFIG_FILE).unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        load_checkpoint(tmp_path / "nowhere")
    (path / CONFIG_FILE).write_text(original)
    (path / WEIGHTS_FILE).unlink()
    with pytest.raises(CheckpointError, match="weights.safetensors: missing"):
        load_checkpoint(path)


def test_save_refuses_inconsistent_configs(tmp_path):
    net = build_model("nmnist_small")
    with pytest.raises(ConfigError, match="class_names"):
        save_checkpoint(tmp_path, net, config(class_names=["a"]))
    with pytest.raises(ConfigError, match="covers 4 timesteps"):
        save_checkpoint(tmp_path, net, config(timesteps=6))
    with pytest.raises(ConfigError, match="plain JSON"):
        save_checkpoint(tmp_path, net, config(windowing={"bins": object()}))
    assert not (tmp_path / CONFIG_FILE).exists()
