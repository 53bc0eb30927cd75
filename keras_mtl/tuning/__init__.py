"""KerasTuner search over multi-task architectures and loss weighting."""

from keras_mtl.tuning.hypermodel import BUILTIN_BACKBONES
from keras_mtl.tuning.hypermodel import DEFAULT_LEARNING_RATE
from keras_mtl.tuning.hypermodel import MultiTaskHyperModel
from keras_mtl.tuning.hypermodel import cut_backbone
from keras_mtl.tuning.hypermodel import cut_points
from keras_mtl.tuning.hypermodel import small_cnn
