"""Evaluate a calibrated checkpoint on its test split; logic in `spikecut.models.evaluation`.

    python tools/evaluate.py runs/nmnist-tet-rcs/model --out runs/nmnist-tet-rcs/eval

Writes `<out>/report.json` (accuracy at every t, OCT, Top-K over the ε sweep, max-softmax /
entropy / fixed-t baselines with their settings matched to Top-K's accuracy, and wall-clock per
sample with real early exit against all T steps in the same run) and three figures:
`accuracy_vs_steps.png`, `stop_histogram.png`, `accuracy_vs_t.png`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from spikecut.models.evaluation import evaluate_checkpoint, plot_report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("checkpoint", help="checkpoint directory (e.g. <run>/model)")
    p.add_argument("--split", choices=("test", "validation", "train"), default="test")
    p.add_argument("--root", help="dataset folder, if not where training found it")
    p.add_argument("--limit", type=int, help="first n samples of the split")
    p.add_argument("--epsilon", type=float, help="ε for the timed Top-K (default: checkpoint's)")
    p.add_argument("--no-timing", action="store_true", help="skip the wall-clock early-exit runs")
    p.add_argument("--timing-samples", type=int, help="time only the first n samples")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--out", help="output folder (default: <checkpoint>/../eval)")
    p.add_argument("--title", default="", help="figure title")
    p.add_argument("--json", action="store_true", help="print the whole report")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    report = evaluate_checkpoint(
        args.checkpoint,
        split=args.split,
        root=args.root,
        limit=args.limit,
        epsilon=args.epsilon,
        timing=not args.no_timing,
        timing_samples=args.timing_samples,
        progress=True,
    )
    out = Path(args.out) if args.out else Path(args.checkpoint).resolve().parent / "eval"
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_report(report, out, args.title)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    eps = report["default_epsilon"]
    topk = next(r for r in report["topk"] if abs(r["epsilon"] - eps) < 1e-12)
    print(f"{report['samples']} {report['split']} samples, T={report['timesteps']}")
    print(f"accuracy at T:   {100 * report['accuracy_T']:.2f} %")
    print(
        f"OCT (oracle):    {100 * report['oct']['accuracy']:.2f} % at "
        f"{report['oct']['mean_steps']:.2f} mean steps"
    )
    print(
        f"Top-K ε={eps:.2f}:    {100 * topk['accuracy']:.2f} % at {topk['mean_steps']:.2f} mean "
        f"steps ({topk['reduction']:.2f}x fewer)"
    )
    for name, point in report["matched"][f"{eps:.2f}"].items():
        flag = "" if point["matched"] else " (never as accurate)"
        print(
            f"  {name:10s} at matched accuracy: {100 * point['accuracy']:.2f} % at "
            f"{point['mean_steps']:.2f} mean steps{flag}"
        )
    for name, row in report.get("timing", {}).items():
        print(
            f"  timed {name:20s} {row['ms_per_sample']:.3f} ms/sample, "
            f"{row['speedup_vs_full']:.2f}x vs all steps, {row['mean_steps']:.2f} steps"
        )
    print(f"report: {out / 'report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
