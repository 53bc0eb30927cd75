"""keras_mtl: multi-task (multi-output) models for Keras 3.

Build a model with one shared backbone and one head per task, train it with
plain `model.fit`, weight its losses with the methods of the MTL literature.

Example:

>>> import keras_mtl
>>> tasks = [keras_mtl.tasks.Regression("age", loss="mae"),
...          keras_mtl.tasks.MulticlassClassification("ethnicity", num_classes=5)]
>>> model = keras_mtl.build_model("MobileNetV3Small", tasks,
...                               input_shape=(32, 32, 3), head_units=(16,))
>>> model.compile(optimizer="adam")
"""

from keras_mtl import adversarial
from keras_mtl import architectures
from keras_mtl import callbacks
from keras_mtl import data
from keras_mtl import distillation
from keras_mtl import export
from keras_mtl import metrics
from keras_mtl import objectives
from keras_mtl import optimizers
from keras_mtl import tasks
from keras_mtl import tuning
from keras_mtl import weighting
from keras_mtl.models import build_model
from keras_mtl.distillation import Distiller
from keras_mtl.export import export_saved_model
from keras_mtl.export import export_tflite
from keras_mtl.models import MultiTaskModel
from keras_mtl.tuning import MultiTaskHyperModel
from keras_mtl.preprocessing import ImagePreprocessing
from keras_mtl.version import __version__

__all__ = [
    "Distiller",
    "ImagePreprocessing",
    "MultiTaskHyperModel",
    "MultiTaskModel",
    "__version__",
    "adversarial",
    "architectures",
    "build_model",
    "callbacks",
    "data",
    "distillation",
    "export",
    "export_saved_model",
    "export_tflite",
    "metrics",
    "objectives",
    "optimizers",
    "tasks",
    "tuning",
    "weighting",
]
