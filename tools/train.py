"""Train an SNN for the Top-K cutoff; the logic lives in `spikecut.models.training`.

    python tools/train.py --dataset nmnist --root ../shared/data/nmnist_1k --method direct \
        --loss tet --alpha 0.002 --epochs 60 --out runs/nmnist-tet-rcs
    python tools/train.py --dataset emulated-digits --method conversion --qcfs-levels 4 ...
    torchrun --standalone --nproc_per_node=2 tools/train.py ...   # DistributedDataParallel

Re-running with the same --out resumes from the last completed epoch. The final checkpoint is
`<out>/model` (BN folded, Top-K β[t] calibrated on the training split); per-epoch metrics are in
`<out>/metrics.jsonl`.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys

from spikecut.models.training import (
    ANN_FRAMES,
    CACHES,
    LOSSES,
    METHODS,
    OPTIMIZERS,
    PRECISIONS,
    SCHEDULES,
    TrainConfig,
    train,
)
from spikecut.sources.datasets import PRESETS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = TrainConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", choices=sorted(PRESETS), default=defaults.dataset)
    p.add_argument("--root", help="dataset folder (N-MNIST layouts, tonic's save_to)")
    p.add_argument("--arch", help="architecture (default: the dataset's, see DEFAULT_ARCH)")
    p.add_argument("--method", choices=METHODS, default=defaults.method)
    p.add_argument("--loss", choices=LOSSES, default=defaults.loss, help="direct training loss")
    p.add_argument("--qcfs-levels", type=int, default=defaults.qcfs_levels, help="QCFS L")
    p.add_argument(
        "--ann-frames",
        choices=ANN_FRAMES,
        help="conversion: train the ANN on prefix means (default) or on the mean of all T",
    )
    p.add_argument("--alpha", type=float, default=0.0, help="RCS weight (0: no RCS)")
    p.add_argument("--timesteps", type=int, help="T (default: the dataset preset's)")
    p.add_argument("--window-us", type=int, help="fixed window per step (default: span / T)")
    p.add_argument("--epochs", type=int, default=defaults.epochs)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size, help="global batch")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=defaults.optimizer)
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--momentum", type=float, default=defaults.momentum)
    p.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    p.add_argument("--schedule", choices=SCHEDULES, default=defaults.schedule)
    p.add_argument("--seed", type=int, default=defaults.seed, help="weights, order, shifts")
    p.add_argument("--split-seed", type=int, default=defaults.split_seed)
    p.add_argument("--validation", type=float, default=defaults.validation)
    p.add_argument("--test", type=float, default=defaults.test, help="(datasets without one)")
    p.add_argument("--max-shift-px", type=int, help="translation (default: the preset's)")
    p.add_argument("--limit", type=int, help="first n samples of each split (smoke runs)")
    p.add_argument("--epsilon", type=float, help="cutoff ε stored (default: chosen on validation)")
    p.add_argument("--cache", choices=CACHES, default=defaults.cache)
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers (lazy cache)")
    p.add_argument("--device", default=defaults.device, help="auto, cpu or cuda")
    p.add_argument("--precision", choices=PRECISIONS, default=defaults.precision)
    p.add_argument("--threads", type=int, help="torch CPU threads per process")
    p.add_argument("--stop-after", type=int, help="stop after this many epochs (resume later)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--out", default=defaults.out_dir, help="run directory")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = TrainConfig(
        dataset=args.dataset,
        root=args.root,
        arch=args.arch,
        method=args.method,
        loss=args.loss,
        qcfs_levels=args.qcfs_levels,
        ann_frames=args.ann_frames,
        alpha=args.alpha,
        timesteps=args.timesteps,
        window_us=args.window_us,
        epochs=args.epochs,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        lr=args.lr,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        schedule=args.schedule,
        seed=args.seed,
        split_seed=args.split_seed,
        validation=args.validation,
        test=args.test,
        max_shift_px=args.max_shift_px,
        limit=args.limit,
        epsilon=args.epsilon,
        cache=args.cache,
        workers=args.workers,
        device=args.device,
        precision=args.precision,
        out_dir=args.out,
    )
    command = shlex.join(["python", "tools/train.py", *(sys.argv[1:] if argv is None else argv)])
    result = train(
        config,
        stop_after=args.stop_after,
        progress=not args.no_progress,
        command=command,
        threads=args.threads,
    )
    summary = {
        "run_dir": str(result.run_dir),
        "checkpoint": None if result.checkpoint is None else str(result.checkpoint),
        "epochs_done": result.epochs_done,
        "best_epoch": result.best_epoch,
        "best_validation": result.best_validation,
    }
    if os.environ.get("RANK", "0") != "0":
        return 0
    if args.json:
        print(json.dumps(summary, indent=2))
    elif result.checkpoint is not None:
        print(f"best epoch {result.best_epoch + 1}: {result.best_validation.get('acc_T')}")
        print(f"checkpoint: {result.checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
