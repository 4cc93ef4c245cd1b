"""Feature extraction from a frozen encoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data.dataset import ViewDataset, collate


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    dataset: ViewDataset,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    num_workers: int = 0,
    normalize: bool = True,
    progress: bool = False,
    desc: str = "features",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features (N, D) float32, labels (N,))`` in dataset order, encoder in eval mode.

    The encoder's train/eval mode is restored afterwards. Features are l2-normalized unless
    ``normalize=False``.
    """
    device = torch.device(device) if device is not None else next(encoder.parameters()).device
    was_training = encoder.training
    encoder.eval()
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=device.type == "cuda",
    )
    feats, labels = [], []
    use_bf16 = device.type == "cuda"
    try:
        for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
            x = batch["views"][0].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                f = encoder(x)
            f = f.float()
            feats.append(F.normalize(f, dim=1) if normalize else f)
            labels.append(batch["labels"].to(device))
    finally:
        encoder.train(was_training)
    return torch.cat(feats), torch.cat(labels)
