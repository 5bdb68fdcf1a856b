"""Configuration for the kiosk: the validated schema, the loader and experiment configs."""

from .experiment import ExperimentConfig, load_experiment
from .loader import DEFAULT_CONFIG_FILE, load_config, validate_config
from .schema import KioskConfig

__all__ = [
    "DEFAULT_CONFIG_FILE",
    "ExperimentConfig",
    "KioskConfig",
    "load_config",
    "load_experiment",
    "validate_config",
]
