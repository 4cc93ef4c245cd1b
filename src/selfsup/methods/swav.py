"""SwAV.

Caron, Misra, Mairal, Goyal, Bojanowski, Joulin. "Unsupervised Learning of Visual Features by
Contrasting Cluster Assignments", NeurIPS 2020, arXiv:2006.09882. Official code:
facebookresearch/swav (``main_swav.py``, ``src/resnet50.py``, ``scripts/*.sh``).

Follows the official defaults: a projector (2048 hidden, BN, ReLU, 128 out), l2-normalized
embeddings scored against K = 3,000 prototypes (a bias-free linear layer whose rows are
l2-normalized before every step, and which receives no update during the first epoch: the official
``freeze_prototypes_niters`` is 313 iterations at batch 4096 and 5005 at batch 256); codes from
Sinkhorn-Knopp (epsilon 0.05, 3 iterations, sums all-reduced across ranks) computed from the global
crops only (``crops_for_assign`` 0 and 1); the swapped prediction loss: each global crop's code is
predicted from every other crop (global and local) with a softmax at temperature 0.1, averaged over
those crops, then over the global crops; synchronized BatchNorm. The optional queue (the 200-epoch
batch-256 setting: 3,840 past embeddings of each global crop, filled from epoch 15 and used once
full) only adds columns to Sinkhorn; the codes of the current batch are kept. Multi-crop: one
backbone pass per resolution. The optimizer (LARS lr 4.8 at batch 4096, wd 1e-6, cosine to
lr / 1000) and the crops (2 x 224 of scale 0.14-1 and 6 x 96 of scale 0.05-0.14, colour distortion
of strength 1, blur p=0.5 on every crop, no solarization, bilinear resized crops) live in the
presets. As the official LARC wraps SGD over ``model.parameters()``, every parameter is decayed and
trust-scaled, biases and BN included (``exclude_bias_norm = False``). Logs: ``z_std`` and
``code_entropy``, the mean entropy of the first global view's codes; near ln K the codes are uniform,
carry no target, and the loss can only fall by flattening every score (a stalled run).

Deviations: the queue holds the embeddings of all ranks (identical on every rank, kept in the state
dict, so checkpoints and DDP buffer broadcasts keep it) and each rank feeds its slice of it to the
distributed Sinkhorn; the official code keeps a separate queue per rank of its own embeddings and
saves it next to the checkpoint. Both give Sinkhorn the same set of columns. The queue length is
not rounded down to a multiple of the global batch. Sinkhorn shifts each prototype's scores by their
maximum before the exponential (an exact no-op, for stability).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import dist
from ..losses import swav_loss
from ..nn import mlp
from ..nn.multicrop import multicrop_forward
from ..nn.sinkhorn import sinkhorn
from .base import Method, MethodConfig, Progress, StepOutput, register
from .stats import embedding_std


@dataclass
class SwAVConfig(MethodConfig):
    name: str = "swav"
    temperature: float = 0.1
    epsilon: float = 0.05  # Sinkhorn entropy regularization
    sinkhorn_iterations: int = 3
    num_prototypes: int = 3000
    proj_hidden_dim: int = 2048
    proj_out_dim: int = 128
    num_global_views: int = 2  # the leading views, whose codes are predicted (crops_for_assign)
    freeze_prototypes_epochs: float = 1.0  # prototypes receive no update before this epoch
    queue_length: int = 0  # past embeddings per global crop added to Sinkhorn; 0: no queue
    queue_start_epoch: float = 15.0


def _forget_filled(module: SwAV, incompatible_keys) -> None:
    module._filled = None


@register("swav")
class SwAV(Method):
    Config = SwAVConfig
    exclude_bias_norm = False  # main_swav.py: LARC(SGD(model.parameters(), weight_decay=...))

    queue: torch.Tensor
    queue_count: torch.Tensor

    def __init__(self, backbone: nn.Module, cfg: SwAVConfig) -> None:
        super().__init__(backbone, cfg)
        if cfg.sinkhorn_iterations < 1 or cfg.epsilon <= 0:
            raise ValueError(
                f"method.sinkhorn_iterations={cfg.sinkhorn_iterations}, method.epsilon={cfg.epsilon}: SwAV's codes "
                "need at least one Sinkhorn iteration and epsilon > 0 (without them the codes are not balanced)"
            )
        if cfg.num_prototypes <= cfg.proj_out_dim:
            warnings.warn(
                f"SwAV: method.num_prototypes={cfg.num_prototypes} <= method.proj_out_dim={cfg.proj_out_dim}. "
                "Embeddings scoring all prototypes equally then exist (uniform predictions and uniform "
                "Sinkhorn codes, a loss of ln K with zero gradient) and training can stall there; use more "
                "prototypes than embedding dimensions (the paper: 3,000 for 128-d).",
                stacklevel=2,
            )
        self.projector = mlp(backbone.num_features, cfg.proj_hidden_dim, cfg.proj_out_dim, norm="bn")
        self.prototypes = nn.Linear(cfg.proj_out_dim, cfg.num_prototypes, bias=False)
        self._normalize_prototypes()
        if cfg.queue_length > 0:
            self.register_buffer("queue", torch.zeros(cfg.num_global_views, cfg.queue_length, cfg.proj_out_dim))
            self.register_buffer("queue_count", torch.zeros((), dtype=torch.long))  # rows filled so far
        self._queue_on = False
        # host copy of queue_count, read once (not a device sync every step); reset by load_state_dict
        self._filled: int | None = None
        self.register_load_state_dict_post_hook(_forget_filled)

    @torch.no_grad()
    def _normalize_prototypes(self) -> None:
        self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))

    def on_step(self, progress: Progress) -> None:
        self._normalize_prototypes()
        self._queue_on = self.cfg.queue_length > 0 and progress.epoch >= self.cfg.queue_start_epoch

    def after_backward(self, progress: Progress) -> None:
        if progress.epoch < self.cfg.freeze_prototypes_epochs:
            self.prototypes.weight.grad = None

    @torch.no_grad()
    def _codes(self, scores: torch.Tensor, view: int) -> torch.Tensor:
        """Sinkhorn codes of one global view's ``(B, K)`` scores, with this rank's slice of the queue
        as extra columns once the queue is full."""
        n = scores.shape[0]
        if self._queue_on and self.training and self._queue_rows() >= self.queue.shape[1]:
            length, r, w = self.queue.shape[1], dist.rank(), dist.world_size()
            past = self.queue[view, r * length // w : (r + 1) * length // w]
            scores = torch.cat([(past @ self.prototypes.weight.T).float(), scores.float()])
        return sinkhorn(scores, self.cfg.epsilon, self.cfg.sinkhorn_iterations)[-n:]

    def _queue_rows(self) -> int:
        if self._filled is None:
            self._filled = int(self.queue_count)
        return self._filled

    @torch.no_grad()
    def _enqueue(self, z: list[torch.Tensor]) -> None:
        """Shift the queue and put the embeddings of every rank's global views in front (newest first)."""
        new = torch.stack([dist.gather_no_grad(zi.detach().float()) for zi in z])
        n, length = new.shape[1], self.queue.shape[1]
        if n >= length:
            self.queue.copy_(new[:, :length])
        else:
            self.queue[:, n:] = self.queue[:, :-n].clone()
            self.queue[:, :n] = new
        self._filled = self._queue_rows() + n
        self.queue_count.add_(n)

    def forward(self, views: list[torch.Tensor]) -> StepOutput:
        g = self.cfg.num_global_views
        if len(views) < max(2, g):
            raise ValueError(f"SwAV needs at least {max(2, g)} views (the first {g} are coded), got {len(views)}")
        n = views[0].shape[0]
        z = F.normalize(self.projector(multicrop_forward(self.backbone, views)), dim=1)
        scores = self.prototypes(z)
        chunks = list(scores.split(n))
        codes = [self._codes(chunks[i].detach(), i) for i in range(g)]
        if self._queue_on and self.training:
            self._enqueue(list(z[: g * n].split(n)))
        loss = swav_loss(chunks, codes, self.cfg.temperature)
        # the codes' entropy (nats): near ln K they are uniform and carry no target (the stalled state)
        code_entropy = torch.special.entr(codes[0]).sum(dim=1).mean()
        return StepOutput(loss, {"z_std": embedding_std(z[:n]), "code_entropy": code_entropy})
