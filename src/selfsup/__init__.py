"""selfsup: self-supervised representation learning for vision on one small core."""

from .app.evaluate import knn_from_weights
from .app.pretrain import pretrain
from .app.runs import build_from_config, load_encoder
from .backbones import build_backbone
from .config import Config, ConfigError, ViewSpec, list_presets, load_config
from .data import DataError, eval_dataset, pretrain_dataset
from .eval import extract_features, knn_classify, knn_eval, knn_sweep, linear_probe
from .methods import METHODS, Method, build_method
from .train import fit

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "Config",
    "ConfigError",
    "DataError",
    "Method",
    "ViewSpec",
    "build_backbone",
    "build_from_config",
    "build_method",
    "eval_dataset",
    "extract_features",
    "fit",
    "knn_classify",
    "knn_eval",
    "knn_from_weights",
    "knn_sweep",
    "linear_probe",
    "list_presets",
    "load_config",
    "load_encoder",
    "pretrain",
    "pretrain_dataset",
]
