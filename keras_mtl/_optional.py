"""Optional dependencies, imported where a feature needs them.

keras_mtl needs only Keras and NumPy; a backend and the TF-only features come
with extras (`pip install "keras_mtl[tensorflow]"`, `[jax]`, `[tuner]`,
`[tfds]`, `[examples]`, see pyproject.toml). A feature whose dependency is
missing raises an `ImportError` that names the feature and the extra, not a
bare `ModuleNotFoundError` from deep inside.

Example:

>>> from keras_mtl._optional import require
>>> require("numpy", "arrays").__name__
'numpy'
"""

import importlib

#: The extra that installs each optional top-level module.
EXTRAS = {
    "tensorflow": "tensorflow",
    "keras_tuner": "tuner",
    "tensorflow_datasets": "tfds",
    "jax": "jax",
    "sklearn": "examples",
    "matplotlib": "examples",
}


def require(module, feature):
    """Imports and returns `module`, which `feature` (words for the error)
    needs; an `ImportError` naming the extra to install if it is missing."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        top = module.split(".")[0]
        if not error.name or not (module + ".").startswith(error.name + "."):
            raise  # Something else is missing: not ours to explain.
        extra = EXTRAS.get(top)
        hint = f'pip install "keras_mtl[{extra}]"' if extra else f"pip install {top}"
        raise ImportError(
            f"{feature} needs the {top!r} package, which is not installed. Install it "
            f"with: {hint}" + (
                " (or tensorflow-cpu, TensorFlow's CPU build)." if top == "tensorflow" else "."
            )
        ) from error
