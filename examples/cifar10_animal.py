"""CIFAR-10 + animal: one image, two tasks built from the same label.

The practical example of seed 003 (an MTL guide): CIFAR-10's 10-class label
and a second, coarser task derived from it, animal (bird, cat, deer, dog, frog,
horse) vs non-animal (airplane, automobile, ship, truck), learnt by one
network with a shared trunk and two heads:

- `label`: `MulticlassClassification` over the 10 classes;
- `animal`: `BinaryClassification`.

`keras_mtl.datasets.cifar10_animal.load` reads `tfds.load("cifar10")` and adds
the animal label. The last 10% of the training split is held out for
validation; the test split is evaluated at the end. The trunk is the small CNN
of `keras-mtl demo`; `--weighting` picks a loss-weighting method (the seed
sums the two losses: `none`).

    python examples/cifar10_animal.py --epochs 10
    python examples/cifar10_animal.py --weighting uncertainty --max-examples 10000

tensorflow-datasets downloads CIFAR-10 (~160 MB) on first use (`--data-dir`);
the test runs this script offline on `tfds.testing.mock_data`.
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
from keras_mtl.datasets import cifar10_animal

DEFAULTS = {"epochs": 10, "max_examples": 0}
QUICK = {"epochs": 1, "max_examples": 64}


def make_tasks():
    return [
        keras_mtl.tasks.MulticlassClassification(
            "label", num_classes=cifar10_animal.NUM_CLASSES,
            class_names=list(cifar10_animal.CLASS_NAMES),
        ),
        keras_mtl.tasks.BinaryClassification("animal"),
    ]


def weighting_argument(name):
    if name.lower() == "none":
        return None
    try:
        weighting_lib.get(name)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return name.lower()


def load(split, max_examples, batch_size, data_dir, shuffle_seed=None):
    ds = cifar10_animal.load(split, data_dir=data_dir)
    if max_examples:
        ds = ds.take(max_examples)
    if shuffle_seed is not None:
        ds = ds.shuffle(10000, seed=shuffle_seed)
    return ds.batch(batch_size).prefetch(2)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=positive_int_argument,
                        help=f"default {DEFAULTS['epochs']} ({QUICK['epochs']} with --quick)")
    parser.add_argument("--max-examples", type=non_negative_int_argument,
                        help="examples per split, 0 for all (default; 64 with --quick)")
    parser.add_argument("--batch-size", type=positive_int_argument, default=128)
    parser.add_argument("--weighting", type=weighting_argument, default=None,
                        help="loss weighting: none (the plain sum, as in the seed) or a "
                             "keras_mtl.weighting name such as uncertainty, dwa, pcgrad")
    parser.add_argument("--data-dir", "--data_dir", dest="data_dir", default=None,
                        help="tensorflow-datasets data folder (default: its own)")
    parser.add_argument("--seed", type=non_negative_int_argument, default=0)
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=2)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run (tests, CI): 1 epoch on 64 examples unless given")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else DEFAULTS
    for key, value in sizes.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    keras.utils.set_random_seed(args.seed)

    def split(name, shuffle=False):
        return load(name, args.max_examples, args.batch_size, args.data_dir,
                    args.seed if shuffle else None)

    train, validation = split("train[:90%]", shuffle=True), split("train[90%:]")
    test = split("test")

    image_shape = (32, 32, 3)
    tasks = make_tasks()
    model = keras_mtl.build_model(
        demo.demo_trunk(image_shape), tasks, input_shape=image_shape, head_units=(128,),
        name="cifar10_animal",
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), weighting=args.weighting)
    # shuffle=False: the dataset shuffles itself (Keras ignores `shuffle` for
    # datasets, and warns when it is left at its default of True).
    history = model.fit(train, validation_data=validation, epochs=args.epochs,
                        shuffle=False, verbose=args.verbose)
    logs = model.evaluate(test, return_dict=True, verbose=0)

    found = metrics_lib.task_metrics(logs, tasks)
    rows = [[task, metric, f"{value:.4f}"]
            for task, values in found.items() for metric, value in values.items()]
    print("\nTest split:\n")
    print(demo.markdown_table(["task", "metric", "value"], rows))
    return history, found


if __name__ == "__main__":
    main(sys.argv[1:])
