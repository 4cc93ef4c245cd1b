"""Evaluation: feature extraction, weighted kNN (and its sweep), linear probe, fine-tuning with a
fraction of the labels, SimCLR v2 distillation, exported weights and embeddings: functions of
modules, tensors and datasets. Running them from weights on disk is :mod:`selfsup.app.evaluate`.
"""

from .distill import DistillConfig, distill, distill_and_evaluate, distillation_loss
from .export import export_encoder, load_embeddings, save_embeddings
from .features import extract_features
from .finetune import FinetuneConfig, balanced_subset, finetune, subset_from_file
from .knn import knn_classify, knn_eval, knn_predict, knn_sweep
from .linear import LinearConfig, linear_probe, train_linear, train_linear_augmented
from .supervised import Classifier, evaluate, linear_head, topk_accuracy, train_transform

__all__ = [
    "Classifier",
    "DistillConfig",
    "FinetuneConfig",
    "LinearConfig",
    "balanced_subset",
    "distill",
    "distill_and_evaluate",
    "distillation_loss",
    "evaluate",
    "export_encoder",
    "extract_features",
    "finetune",
    "knn_classify",
    "knn_eval",
    "knn_predict",
    "knn_sweep",
    "linear_head",
    "linear_probe",
    "load_embeddings",
    "save_embeddings",
    "subset_from_file",
    "topk_accuracy",
    "train_linear",
    "train_linear_augmented",
    "train_transform",
]
