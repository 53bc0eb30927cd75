"""The multi-task model and its builder."""

from keras_mtl.models.builder import build_model
from keras_mtl.models.multi_task_model import MultiTaskModel

__all__ = ["MultiTaskModel", "build_model"]
