"""Evaluation of frozen features: extraction and weighted kNN."""

from .features import extract_features
from .knn import knn_classify, knn_predict

__all__ = ["extract_features", "knn_classify", "knn_predict"]
