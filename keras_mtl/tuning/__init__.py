"""KerasTuner search over multi-task architectures and loss weighting.

- `hypermodel`: `MultiTaskHyperModel`, the `keras_tuner.HyperModel` (its
  docstring describes the search space);
- `branching`: the backbones known by name and `cut_backbone` (the branch
  point);
- `spaces`: the weighting methods' own hyperparameters, read from each
  method's `search_space`;
- `checks`: the hypermodel's argument checks.

This package imports KerasTuner (`import keras_mtl` does not).
"""

from keras_mtl.backbones import cut_points
from keras_mtl.backbones import small_cnn
from keras_mtl.tuning.branching import BUILTIN_BACKBONES
from keras_mtl.tuning.branching import cut_backbone
from keras_mtl.tuning.hypermodel import DEFAULT_LEARNING_RATE
from keras_mtl.tuning.hypermodel import MultiTaskHyperModel

__all__ = [
    "BUILTIN_BACKBONES",
    "DEFAULT_LEARNING_RATE",
    "MultiTaskHyperModel",
    "cut_backbone",
    "cut_points",
    "small_cnn",
]
