"""The `keras-mtl` command line (moved to `keras_mtl.demo`, being split)."""

from keras_mtl.demo import DEMO_DEFAULTS  # noqa: F401
from keras_mtl.demo import QUICK_DEFAULTS  # noqa: F401
from keras_mtl.demo import SMALL_CNN  # noqa: F401
from keras_mtl.demo import _image_size  # noqa: F401
from keras_mtl.demo import _markdown_table  # noqa: F401
from keras_mtl.demo import _weighting_name  # noqa: F401
from keras_mtl.demo import build_parser  # noqa: F401
from keras_mtl.demo import demo_tasks  # noqa: F401
from keras_mtl.demo import main  # noqa: F401
from keras_mtl.demo import run_demo  # noqa: F401
from keras_mtl.demo import small_cnn  # noqa: F401
