"""`torchrun --nproc_per_node=2 tools/train.py` (gloo, CPU) trains the same network as one process.

What has to agree for that: the global batch (each step's samples split over the processes, none
repeated: `epoch_batches`), the shifts (a function of seed, epoch and sample), BatchNorm statistics
over the global batch (`GlobalBatchNorm`) and the RCS max over the global batch (`gather_rows`).
Both runs use float64: with spiking layers a float32 rounding difference can flip a spike and
then grow, which would test rounding luck rather than the algorithm.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from spikecut.sources.datasets import EmulatedDigits, write_recordings

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.timeout(180)


def run(command: list[str], out: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (out / "model" / "config.json").is_file()


def test_two_processes_train_what_one_process_trains(tmp_path):
    folder = write_recordings(EmulatedDigits(), tmp_path / "digits", indices=range(100))
    args = [
        "tools/train.py",
        "--dataset=emulated-digits",
        f"--root={folder}",
        "--timesteps=4",
        "--epochs=2",
        "--batch-size=16",
        "--limit=48",
        "--validation=0.2",
        "--test=0.2",
        "--alpha=0.002",  # RCS on: its batch max must span both processes
        "--max-shift-px=2",
        "--precision=float64",
        "--threads=1",
        "--no-progress",
    ]
    single, double = tmp_path / "single", tmp_path / "double"
    run([sys.executable, *args, f"--out={single}"], single)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    run([*torchrun, *args, f"--out={double}"], double)

    ours = load_file(double / "last" / "state-1" / "weights.safetensors")
    reference = load_file(single / "last" / "state-1" / "weights.safetensors")
    assert ours.keys() == reference.keys()
    for key, value in reference.items():
        if value.is_floating_point():
            torch.testing.assert_close(ours[key], value, rtol=1e-9, atol=1e-12, msg=key)
        else:
            assert torch.equal(ours[key], value), key  # BN batch counters

    def log(run_dir: Path) -> list[dict]:
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    for a, b in zip(log(single), log(double), strict=True):
        assert a.keys() == b.keys()
        for key in ("loss", "task_loss", "rcs", "train_acc"):
            assert a[key] == pytest.approx(b[key], rel=1e-9), key
        assert a["val_acc_per_t"] == b["val_acc_per_t"]
        assert a["rcs"] > 0
    # it trained (the comparison is not between two untouched networks)
    assert log(single)[1]["loss"] < log(single)[0]["loss"]
