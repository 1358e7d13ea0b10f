"""Force-centric training: data mixing, objectives, configuration and the trainer."""

from .config import ConfigError, SourceConfig, TrainConfig, config_from_dict, load_config, with_replay
from .objectives import ObjectiveConfig
from .trainer import Trainer, train

__all__ = [
    "ConfigError",
    "ObjectiveConfig",
    "SourceConfig",
    "TrainConfig",
    "Trainer",
    "config_from_dict",
    "load_config",
    "train",
    "with_replay",
]
