"""Export for inference: a SavedModel for TF Serving, a `.tflite` file.

- `saved_model`: `export_saved_model`, the TF Serving SavedModel with
  post-processing in the graph and one signature per task;
- `versioning`: TF Serving's `<base>/<version>/` layout, and exports that
  appear whole or not at all;
- `serving`: `rest_predict`, TF Serving's REST `:predict` answered locally;
- `tflite`: `export_tflite`, optionally quantised.

Export is TensorFlow by nature: this package imports TensorFlow (`import
keras_mtl` does not import it).
"""

from keras_mtl.export.saved_model import BYTES_SIGNATURE
from keras_mtl.export.saved_model import DEFAULT_SIGNATURE
from keras_mtl.export.saved_model import TASK_SIGNATURE_PREFIX
from keras_mtl.export.saved_model import export_saved_model
from keras_mtl.export.saved_model import task_outputs
from keras_mtl.export.serving import rest_predict
from keras_mtl.export.tflite import QUANTIZATIONS
from keras_mtl.export.tflite import export_tflite

__all__ = [
    "BYTES_SIGNATURE",
    "DEFAULT_SIGNATURE",
    "QUANTIZATIONS",
    "TASK_SIGNATURE_PREFIX",
    "export_saved_model",
    "export_tflite",
    "rest_predict",
    "task_outputs",
]
