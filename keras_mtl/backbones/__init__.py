"""Backbones: from a name or a `keras.Model` to the shared trunk."""

from keras_mtl.backbones.resolve import _graph  # noqa: F401  (builder, tuning)
from keras_mtl.backbones.resolve import application_names
from keras_mtl.backbones.resolve import check_input_shape
from keras_mtl.backbones.resolve import cut_points
from keras_mtl.backbones.resolve import preprocessing_mode
from keras_mtl.backbones.resolve import resolve_backbone
