"""Export for inference: a SavedModel for TF Serving, a `.tflite` file."""

from keras_mtl.export.saved_model import BYTES_SIGNATURE
from keras_mtl.export.saved_model import DEFAULT_SIGNATURE
from keras_mtl.export.saved_model import QUANTIZATIONS
from keras_mtl.export.saved_model import TASK_SIGNATURE_PREFIX
from keras_mtl.export.saved_model import export_saved_model
from keras_mtl.export.saved_model import export_tflite
from keras_mtl.export.saved_model import rest_predict
from keras_mtl.export.saved_model import task_outputs
