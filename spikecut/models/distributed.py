"""Data-parallel training that computes what one process would compute on the global batch.

`torchrun --nproc_per_node=N` starts N processes; each sees `global_batch / N` samples per step.
DistributedDataParallel averages the gradients, which equals the single-process gradient only if
every per-batch statistic is taken over the global batch too. Two are not, out of the box:

- BatchNorm normalises with the statistics of the process's own samples. `nn.SyncBatchNorm` fixes
  that on GPUs only, so `use_global_batchnorm` swaps in `GlobalBatchNorm`, which all-reduces sums
  (differentiably) on any backend, gloo on CPU included.
- The RCS regulariser takes a max over the batch. The training loop gathers the per-sample
  penalties of all processes (`gather_rows`, differentiable) before reducing them.

With these, N processes and one process give the same weights up to float rounding, which
`tests/test_ddp.py` checks with 2 CPU processes.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import Tensor, nn

from spikecut.models.network import StepNet, WithBN


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: rank, world size, local rank, the device it trains on."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def init_distributed(device: str = "auto") -> DistContext:
    """Join the process group when started by torchrun (WORLD_SIZE > 1): nccl on GPU, gloo on
    CPU. `device` is "auto" (GPU if there is one), "cpu" or "cuda"."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(device=torch.device(device))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        target = torch.device("cuda", local_rank)
    else:
        target = torch.device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if target.type == "cuda" else "gloo")
    return DistContext(rank, world, local_rank, target)


def shutdown_distributed(context: DistContext) -> None:
    if context.distributed and dist.is_initialized():
        dist.destroy_process_group()


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_rows(x: Tensor) -> Tensor:
    """Concatenate `x` [b, ...] of every process along dim 0, in rank order, keeping the
    gradient path to each process's own rows. Every process must pass the same shape."""
    if _world() == 1:
        return x
    with _public_api():
        return torch.cat(dist_fn.all_gather(x.contiguous()), dim=0)


def all_reduce_sum(x: Tensor) -> Tensor:
    """Differentiable sum over processes (identity in a single process)."""
    if _world() == 1:
        return x
    with _public_api():
        return dist_fn.all_reduce(x)


@contextmanager
def _public_api() -> Iterator[None]:
    """torch.distributed.nn.functional is the public differentiable API; it warns that a private
    module will replace it. Keep the logs quiet until there is a public successor."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics span every process's batch (any backend).

    Same parameters, buffers and state-dict keys as `nn.BatchNorm1d/2d`, so checkpoints and
    `fold_batchnorm` treat it as the plain layer. In eval mode, or in a single process, it is
    exactly the plain layer.
    """

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or _world() == 1:
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        local = torch.tensor([x.numel() // x.shape[1]], dtype=torch.float64, device=x.device)
        dist.all_reduce(local)
        count = float(local.item())
        # Two passes (mean, then centred squares) like the fused kernel, for the same rounding.
        mean = all_reduce_sum(x.sum(dim=dims)) / count
        centred = x - mean.view(shape)
        var = all_reduce_sum((centred * centred).sum(dim=dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = (
                    1.0 / float(self.num_batches_tracked)
                    if self.momentum is None
                    else self.momentum
                )
                unbiased = var * (count / max(count - 1.0, 1.0))
                self.running_mean.mul_(1 - momentum).add_(mean.detach() * momentum)
                self.running_var.mul_(1 - momentum).add_(unbiased.detach() * momentum)
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def use_global_batchnorm(net: StepNet) -> StepNet:
    """Replace every BatchNorm of `net` (in place) by a `GlobalBatchNorm` with the same state."""
    for module in net.modules():
        if isinstance(module, WithBN) and not isinstance(module.bn, GlobalBatchNorm):
            old = module.bn
            new = GlobalBatchNorm(
                old.num_features, old.eps, old.momentum, old.affine, old.track_running_stats
            ).to(old.running_mean)  # same device and dtype
            new.load_state_dict(old.state_dict())
            new.train(old.training)
            module.bn = new
    return net
