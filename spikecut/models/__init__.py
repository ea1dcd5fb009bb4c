"""Spiking networks: neurons, architectures, conversion, losses, RCS, cutoff rules, checkpoints.

The public API, re-exported here (importing this package imports torch):

    net = build_model("nmnist_small")                        # or flavour="ann" for QCFS
    out = net(frames)                                        # [T, B, C, H, W] → [T, B, classes]
    state = net.init_state()                                 # one per stream
    o_t, state = net.step(frames_t, state)                   # state.y = Y(t), state.t = t
    rule = calibrate_topk(cumulative(out), labels, epsilon).rule()
    if rule.should_stop(state.t, state.y[0]): ...
"""

from spikecut.models.architectures import ARCHITECTURES, build_from_spec, build_model
from spikecut.models.checkpoint import (
    CheckpointConfig,
    load_checkpoint,
    read_config,
    save_checkpoint,
)
from spikecut.models.conversion import QCFS, convert_to_snn
from spikecut.models.cutoff import (
    ConfidenceRule,
    CutoffResult,
    CutoffRule,
    EntropyRule,
    FixedStepRule,
    StopCheck,
    TopKCalibration,
    TopKRule,
    accuracy_per_step,
    calibrate_topk,
    collect_outputs,
    evaluate_stops,
    oct_steps,
    rule_from_dict,
    stream_gap,
    topk_gap,
)
from spikecut.models.losses import mean_ce_loss, tet_loss
from spikecut.models.network import (
    NetState,
    StepNet,
    SynOps,
    cumulative,
    fold_batchnorm,
)
from spikecut.models.neurons import (
    CONVERTED_IF,
    DIRECT_LIF,
    ActivationRecords,
    NeuronConfig,
    SpikingNeuron,
    calibration_dropout,
    record_activations,
)
from spikecut.models.rcs import DEFAULT_ALPHA, rcs_loss

__all__ = [
    "ARCHITECTURES",
    "CONVERTED_IF",
    "DEFAULT_ALPHA",
    "DIRECT_LIF",
    "QCFS",
    "ActivationRecords",
    "CheckpointConfig",
    "ConfidenceRule",
    "CutoffResult",
    "CutoffRule",
    "EntropyRule",
    "FixedStepRule",
    "NetState",
    "NeuronConfig",
    "SpikingNeuron",
    "StepNet",
    "StopCheck",
    "SynOps",
    "TopKCalibration",
    "TopKRule",
    "accuracy_per_step",
    "build_from_spec",
    "build_model",
    "calibrate_topk",
    "calibration_dropout",
    "collect_outputs",
    "convert_to_snn",
    "cumulative",
    "evaluate_stops",
    "fold_batchnorm",
    "load_checkpoint",
    "mean_ce_loss",
    "oct_steps",
    "rcs_loss",
    "read_config",
    "record_activations",
    "rule_from_dict",
    "save_checkpoint",
    "stream_gap",
    "tet_loss",
    "topk_gap",
]
