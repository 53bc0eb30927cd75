"""Backbones: from a name or a `keras.Model` to the shared trunk.

- `resolve`: `resolve_backbone` (a `keras.applications` name or any
  `keras.Model`, with `weights=` None, "imagenet" or a local file) and the
  preprocessing convention of each application;
- `graph`: a backbone's operations in order and its cut points;
- `cnn`: `small_cnn`, the package's one small convolutional trunk (the module
  is not named after it: `backbones.small_cnn` is the function);
- `molecules`: `schnet`, a SchNet trunk for molecules (atom types and
  positions), and its layers (`from keras_mtl.backbones.molecules import
  InteractionBlock`); named apart from the function, as `cnn` is.
"""

from keras_mtl.backbones import graph
from keras_mtl.backbones.cnn import small_cnn
from keras_mtl.backbones.graph import cut_points
from keras_mtl.backbones.resolve import application_names
from keras_mtl.backbones.resolve import check_input_shape
from keras_mtl.backbones.resolve import preprocessing_mode
from keras_mtl.backbones.resolve import resolve_backbone
from keras_mtl.backbones.molecules import schnet

__all__ = [
    "application_names",
    "check_input_shape",
    "cut_points",
    "graph",
    "preprocessing_mode",
    "resolve_backbone",
    "schnet",
    "small_cnn",
]
