"""The shapes scenes as a TensorFlow Datasets builder, `"keras_mtl_shapes"`.

Importing this module registers the builder, after which `tfds.load` builds
the data offline (nothing is downloaded: the examples come from
`keras_mtl.datasets.shapes.generate`) and caches it under `data_dir`:

```python
import tensorflow_datasets as tfds
import keras_mtl.datasets.shapes_tfds  # registers "keras_mtl_shapes"

train = tfds.load("keras_mtl_shapes", split="train", data_dir="/tmp/tfds")
```

`keras_mtl.datasets` does not import this module, because importing
`tensorflow_datasets` is slow; `keras_mtl.datasets.shapes.load` gives the same
data without TFDS.

Features (see `keras_mtl.datasets.shapes` for their meaning):

- `image`: `tfds.features.Image`, uint8 (S, S, 3), PNG-encoded. The pixels
  of `shapes.generate` are whole numbers in [0, 255], so this is lossless:
  cast to float32 to get exactly the arrays of `shapes.generate`.
- `shape`: `ClassLabel` with `shapes.CLASS_NAMES` (int64 when loaded).
- `count`, `size`: float32 scalars; `position`: float32 (2,).
- `segmentation`: int32 (S, S); `depth`: float32 (S, S, 1), both
  zlib-compressed tensors.

Examples are stored in the order of `shapes.generate`, so example i of a
split (read with `shuffle_files=False`) is scene i of
`shapes.generate(split, num_examples, image_size, seed=seed)`.

Configs: `"default"` (64 px; 2,000 / 500 / 500 scenes, seed 0) and `"small"`
(32 px; 64 / 16 / 16 scenes, seed 0), the latter for tests and smoke runs.
"""

import dataclasses

import numpy as np

from keras_mtl._optional import require
from keras_mtl.datasets import shapes

tfds = require("tensorflow_datasets", "keras_mtl.datasets.shapes_tfds (a TFDS builder)")


@dataclasses.dataclass
class KerasMtlShapesConfig(tfds.core.BuilderConfig):
    """A size of the shapes data.

    Args:
        image_size: Side of the square images in pixels.
        split_sizes: Number of scenes per split, as a dict.
        seed: Seed passed to `shapes.generate`.
    """

    image_size: int = 64
    split_sizes: dict = dataclasses.field(
        default_factory=lambda: {"train": 2000, "validation": 500, "test": 500}
    )
    seed: int = 0


class KerasMtlShapes(tfds.core.GeneratorBasedBuilder):
    """Procedural shapes scenes with six labels, generated offline.

    Example:

    >>> import contextlib, io, tempfile
    >>> import tensorflow_datasets as tfds
    >>> with contextlib.redirect_stdout(io.StringIO()):  # TFDS prints progress.
    ...     ds = tfds.load("keras_mtl_shapes/small", split="test",
    ...                    data_dir=tempfile.mkdtemp())
    >>> example = next(iter(ds))
    >>> tuple(example["image"].shape), tuple(example["depth"].shape)
    ((32, 32, 3), (32, 32, 1))
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        KerasMtlShapesConfig(
            name="default",
            description="64 px scenes; 2000 / 500 / 500 examples.",
        ),
        KerasMtlShapesConfig(
            name="small",
            description="32 px scenes; 64 / 16 / 16 examples, for tests.",
            image_size=32,
            split_sizes={"train": 64, "validation": 16, "test": 16},
        ),
    ]
    DEFAULT_BUILDER_CONFIG_NAME = "default"

    def _info(self):
        s = self.builder_config.image_size
        zlib = tfds.features.Encoding.ZLIB
        return self.dataset_info_from_configs(
            description=(
                "Procedural scenes of 1 to 3 circles, squares and triangles "
                "with class, count, size, position, segmentation and depth "
                "labels (see keras_mtl.datasets.shapes)."
            ),
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(s, s, 3), dtype=np.uint8),
                    "shape": tfds.features.ClassLabel(names=shapes.CLASS_NAMES),
                    "count": tfds.features.Scalar(dtype=np.float32),
                    "size": tfds.features.Scalar(dtype=np.float32),
                    "position": tfds.features.Tensor(shape=(2,), dtype=np.float32),
                    "segmentation": tfds.features.Tensor(
                        shape=(s, s), dtype=np.int32, encoding=zlib
                    ),
                    "depth": tfds.features.Tensor(
                        shape=(s, s, 1), dtype=np.float32, encoding=zlib
                    ),
                }
            ),
            supervised_keys=("image", "shape"),
            # Scenes are independent draws, so their order carries no bias;
            # keeping it makes example i equal to `shapes.generate(...)[i]`.
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Generated, never downloaded.
        return {
            split: self._generate_examples(split, size)
            for split, size in self.builder_config.split_sizes.items()
        }

    def _generate_examples(self, split, num_examples):
        config = self.builder_config
        images, labels = shapes.generate(
            split=split,
            num_examples=num_examples,
            image_size=config.image_size,
            seed=config.seed,
        )
        images = images.astype(np.uint8)  # Whole numbers in [0, 255].
        for i in range(num_examples):
            example = {name: values[i] for name, values in labels.items()}
            example["image"] = images[i]
            yield i, example
