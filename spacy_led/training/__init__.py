"""Fine-tuning the LED components outside ``spacy train``: on N Ray Train workers, with DDP.

``spacy-led train-distributed CONFIG --num-workers N`` runs :func:`train_distributed`; the config file is
described in ``spacy_led.training.config``. Ray is imported only when training starts (``pip install
"spacy-led[train]"``).
"""
from .config import TrainingConfig, TrainingConfigError, load_training_config
from .distributed import TrainingResult, train_distributed

__all__ = ["TrainingConfig", "TrainingConfigError", "TrainingResult", "load_training_config", "train_distributed"]
