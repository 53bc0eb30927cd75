"""HydraNet on UTKFace: age, gender and ethnicity from one face, one network.

The story of seed 001: a UTKFace folder whose file names carry the labels
(`30_0_3_20170117145159065.jpg.chip.jpg`: age 30, gender 0, race 3), one
shared backbone and three heads:

- `age`: `Regression` with the L1 loss (reported as MAE, in years);
- `gender`: `BinaryClassification` (0 male, 1 female);
- `ethnicity`: `MulticlassClassification` over 5 classes (White, Black,
  Asian, Indian, Others).

`keras_mtl.datasets.utkface.load` reads the folder; names that do not parse
(the public archive has a few with a missing field) are skipped and reported,
never guessed. A seeded fraction is held out for validation.

UTKFace is not downloaded here (non-commercial research licence): get it from
https://susanqq.github.io/UTKFace/, extract it and pass the folder:

    python examples/utkface_hydranet.py --data-dir UTKFace
    python examples/utkface_hydranet.py --data-dir UTKFace --backbone ResNet50 \\
        --weights imagenet --image-size 128 --weighting uncertainty

The default trunk is the small CNN of `keras-mtl demo` (trains from scratch on a
CPU); the seed's own choice is a pretrained ResNet (`--backbone ResNet50
--weights imagenet`, Keras downloads the weights once), best on a GPU.
"""

import argparse
import logging
import sys

import keras

import keras_mtl
from keras_mtl import demo
from keras_mtl._validation import non_negative_int_argument
from keras_mtl._validation import positive_int_argument
from keras_mtl import metrics as metrics_lib
from keras_mtl import weighting as weighting_lib
from keras_mtl.datasets import utkface

DEFAULTS = {"epochs": 10, "image_size": 64}
QUICK = {"epochs": 1, "image_size": 32}


def make_tasks():
    return [
        keras_mtl.tasks.Regression("age", loss="mae"),
        keras_mtl.tasks.BinaryClassification("gender"),
        keras_mtl.tasks.MulticlassClassification(
            "ethnicity", num_classes=len(utkface.ETHNICITY_NAMES),
            class_names=list(utkface.ETHNICITY_NAMES),
        ),
    ]


def weighting_argument(name):
    if name.lower() == "none":
        return None
    try:
        weighting_lib.get(name)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return name.lower()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", "--data_dir", dest="data_dir", required=True,
                        help="the extracted UTKFace folder of images")
    parser.add_argument("--epochs", type=positive_int_argument,
                        help=f"default {DEFAULTS['epochs']} ({QUICK['epochs']} with --quick)")
    parser.add_argument("--image-size", type=positive_int_argument,
                        help=f"default {DEFAULTS['image_size']} "
                             f"({QUICK['image_size']} with --quick)")
    parser.add_argument("--validation-split", type=float, default=0.2)
    parser.add_argument("--batch-size", type=positive_int_argument, default=64)
    parser.add_argument("--backbone", default=demo.SMALL_CNN,
                        help=f"{demo.SMALL_CNN!r} (default) or a keras.applications name")
    parser.add_argument("--weights", default="none",
                        help="backbone weights: none (default), imagenet or a .weights.h5 path")
    parser.add_argument("--weighting", type=weighting_argument, default=None,
                        help="loss weighting: none (the plain sum, as in the seed) or a "
                             "keras_mtl.weighting name such as uncertainty, dwa, pcgrad")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=non_negative_int_argument, default=0)
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=2)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run (tests, CI): 1 epoch, 32 px images unless given")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else DEFAULTS
    for key, value in sizes.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    keras.utils.set_random_seed(args.seed)

    try:
        (train, validation), found = utkface.load(
            args.data_dir, args.image_size, validation_split=args.validation_split,
            subset="both", seed=args.seed, with_info=True,
        )
    except ValueError as error:  # a missing folder, no usable image, a bad split
        parser.error(str(error))
    num_validation = int(args.validation_split * found.num_examples)
    print(f"UTKFace: {found.num_examples} images in {found.directory} "
          f"({found.num_examples - num_validation} training, {num_validation} validation), "
          f"{found.num_skipped} file(s) skipped", flush=True)
    for name, reason in found.skipped[:10]:
        print(f"  skipped {name}: {reason}")
    train = train.shuffle(4096, seed=args.seed).batch(args.batch_size).prefetch(2)
    validation = validation.batch(args.batch_size).prefetch(2)

    image_shape = (args.image_size, args.image_size, 3)
    trunk = demo.demo_trunk(image_shape) if args.backbone == demo.SMALL_CNN else args.backbone
    tasks = make_tasks()
    model = keras_mtl.build_model(
        trunk, tasks, input_shape=image_shape,
        weights=None if args.weights == "none" else args.weights,
        head_units=(128,), name="hydranet",
    )
    model.compile(optimizer=keras.optimizers.Adam(args.learning_rate), weighting=args.weighting)
    # shuffle=False: the dataset shuffles itself (Keras ignores `shuffle` for
    # datasets, and warns when it is left at its default of True).
    history = model.fit(train, validation_data=validation, epochs=args.epochs,
                        shuffle=False, verbose=args.verbose)

    found_metrics = metrics_lib.task_metrics(history.history, tasks, prefix="val_")
    rows = [[task, metric, f"{value:.4f}"]
            for task, values in found_metrics.items() for metric, value in values.items()]
    print("\nValidation, last epoch (age in years):\n")
    print(demo.markdown_table(["task", "metric", "value"], rows))
    return history


if __name__ == "__main__":
    main(sys.argv[1:])
