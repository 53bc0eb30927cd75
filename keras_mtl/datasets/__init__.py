"""Embedded, offline datasets for multi-task examples, tests and benchmarks.

- `shapes`: procedural scenes of circles, squares and triangles with six
  labels (class, count, size, position, segmentation, depth).
- `digit_pairs`: two overlapping handwritten digits (MultiMNIST-style) from
  scikit-learn's bundled digits, labelled `left` and `right`.
- `utkface`: a UTKFace folder (downloaded by you), labels `age`, `gender`
  and `ethnicity` parsed from the file names.
- `cifar10_animal`: CIFAR-10 through `tfds.load("cifar10")`, labels `label`
  (10 classes) and `animal` (seed 003's second task).
- `qm9`: QM9's 130,831 molecules (atoms and positions, padded) with the 11
  regression targets of the multi-task papers, read offline from the
  `qm9pack` wheel's CSV files (`pip install "keras_mtl[qm9]"`).

Importing this package imports neither TensorFlow nor TensorFlow Datasets.
`import keras_mtl.datasets.shapes_tfds` registers the shapes data as the
TFDS builder `"keras_mtl_shapes"`, so that
`tfds.load("keras_mtl_shapes", data_dir=...)` builds it offline.
"""

from keras_mtl.datasets import cifar10_animal
from keras_mtl.datasets import digit_pairs
from keras_mtl.datasets import qm9
from keras_mtl.datasets import shapes
from keras_mtl.datasets import utkface
