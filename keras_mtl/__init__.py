"""keras_mtl: multi-task (multi-output) models for Keras 3.

Build a model with one shared backbone and one head per task, train it with
plain `model.fit`, weight its losses with the methods of the MTL literature.

`import keras_mtl` imports neither TensorFlow, KerasTuner nor TensorFlow
Datasets: a JAX user who builds, compiles and fits a model never loads them.
The modules that define Keras-serializable classes (tasks, the model,
weighting methods, architectures, ...) are imported with the package, so that
`keras.saving.load_model` finds them by their registered names; they need
only Keras. The others, and the TF-only features (`data` pipelines, `export`,
`tuning`, `datasets`), are imported on first use (PEP 562).

Example:

>>> import keras_mtl
>>> tasks = [keras_mtl.tasks.Regression("age", loss="mae"),
...          keras_mtl.tasks.MulticlassClassification("ethnicity", num_classes=5)]
>>> model = keras_mtl.build_model("MobileNetV3Small", tasks,
...                               input_shape=(32, 32, 3), head_units=(16,))
>>> model.compile(optimizer="adam")
"""

import importlib

_SUBMODULES = (
    "adversarial",
    "architectures",
    "backbones",
    "callbacks",
    "data",
    "datasets",
    "distillation",
    "export",
    "heads",
    "metrics",
    "models",
    "objectives",
    "optimizers",
    "plots",
    "preprocessing",
    "tasks",
    "training",
    "tuning",
    "weighting",
)

# Top-level name -> the module that defines it.
_ATTRIBUTES = {
    "build_model": "keras_mtl.models",
    "MultiTaskModel": "keras_mtl.models",
    "Distiller": "keras_mtl.distillation",
    "export_saved_model": "keras_mtl.export",
    "export_tflite": "keras_mtl.export",
    "MultiTaskHyperModel": "keras_mtl.tuning",
    "ImagePreprocessing": "keras_mtl.preprocessing",
    "__version__": "keras_mtl.version",
}

__all__ = sorted((*_SUBMODULES, *_ATTRIBUTES))

# Modules holding `keras.saving.register_keras_serializable` classes: a
# `.keras` file names them ("keras_mtl>MultiTaskModel"), and Keras finds them
# only once registered, so these are imported now (Keras only, no TensorFlow).
_SERIALIZABLE = (
    "adversarial",
    "architectures",
    "distillation",
    "models",
    "objectives",
    "optimizers",
    "preprocessing",
    "tasks",
    "weighting",
)


def __getattr__(name):
    if name in _SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
    elif name in _ATTRIBUTES:
        module = getattr(importlib.import_module(_ATTRIBUTES[name]), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = module  # Later look-ups skip __getattr__.
    return module


def __dir__():
    return sorted({*globals(), *__all__})


for _name in _SERIALIZABLE:
    __getattr__(_name)
del _name
