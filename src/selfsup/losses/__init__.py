"""Pure, typed, gather-aware losses: every method's loss, one function each, tested against an
independent formula (methods import them; what is method mechanics, such as queues, centers or
Sinkhorn codes, stays with the method or in nn/)."""

from .barlow import barlow_twins_loss, cross_correlation
from .cosine import negative_cosine, normalized_mse
from .dcl import dcl_loss, vmf_weights
from .dino import cross_view_loss, dino_loss
from .ibot import masked_patch_weights, patch_distillation_loss
from .infonce import info_nce_batch, info_nce_queue
from .koleo import koleo_loss
from .mmcr import MMCRTerms, mmcr_loss
from .ntxent import nt_xent
from .swav import swav_loss
from .tico import TiCoTerms, tico_loss
from .vicreg import VICRegTerms, vicreg_loss, vicreg_terms

__all__ = [
    "barlow_twins_loss",
    "cross_correlation",
    "dcl_loss",
    "vmf_weights",
    "cross_view_loss",
    "dino_loss",
    "masked_patch_weights",
    "patch_distillation_loss",
    "info_nce_batch",
    "koleo_loss",
    "info_nce_queue",
    "MMCRTerms",
    "mmcr_loss",
    "negative_cosine",
    "normalized_mse",
    "nt_xent",
    "swav_loss",
    "TiCoTerms",
    "tico_loss",
    "VICRegTerms",
    "vicreg_loss",
    "vicreg_terms",
]
