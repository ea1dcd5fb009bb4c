"""Per-step latency of single-step SNN inference on one CPU thread.

Baseline, measured in the same run: the same BN-folded layers with every spiking layer replaced by
ReLU, called directly as a plain `nn.Sequential` (what a stateless ANN forward of one frame costs).
The ratio is the price of the stateful step (membrane update, state object, context), plus the
optional synaptic-operation count.

    python tools/bench_step.py [--arch nmnist_small] [--threads 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from spikecut.models import SpikingNeuron, build_model, fold_batchnorm


def per_call_us(fn: Callable[[], object], calls: int, repeats: int = 7) -> float:
    """Median over `repeats` of the mean time per call, in microseconds."""
    for _ in range(max(10, calls // 10)):
        fn()
    means = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        means.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(means)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="nmnist_small")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--density", type=float, default=0.1, help="fraction of active pixels")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = fold_batchnorm(build_model(args.arch))
    frames = (torch.rand(1, *net.input_shape) < args.density).float() * 2
    plain = nn.Sequential(
        *[nn.ReLU() if isinstance(m, SpikingNeuron) else m for m in net.body.children()]
    )
    results = {"arch": args.arch, "threads": args.threads, "input_shape": list(net.input_shape)}
    with torch.inference_mode():
        state = net.init_state()
        _, state = net.step(frames, state)  # steady state: membranes exist

        results["baseline_ann_forward_us"] = per_call_us(lambda: plain(frames), args.calls)
        results["step_us"] = per_call_us(lambda: net.step(frames, state), args.calls)
        results["step_with_ops_us"] = per_call_us(
            lambda: net.step(frames, state, count_ops=True), args.calls
        )
    base = results["baseline_ann_forward_us"]
    results["step_ratio"] = results["step_us"] / base
    results["step_with_ops_ratio"] = results["step_with_ops_us"] / base
    if args.json:
        print(json.dumps(results))
        return
    print(f"{args.arch} {tuple(net.input_shape)}, {args.threads} thread(s), batch 1")
    print(f"  baseline ANN forward      {base:9.1f} µs")
    print(f"  step                      {results['step_us']:9.1f} µs  ×{results['step_ratio']:.2f}")
    print(
        f"  step + synaptic-op count  {results['step_with_ops_us']:9.1f} µs  "
        f"×{results['step_with_ops_ratio']:.2f}"
    )


if __name__ == "__main__":
    main()
