"""Two sources, disjoint tasks, one model: multi-dataset training offline.

The embedded shapes scenes stand in for two datasets collected separately:
source `classes` is labelled only for `shape` (the class of the largest shape)
and `count`, source `geometry` only for `size` and `position`. Their images are
different scenes (different seeds). `keras_mtl.data.interleave` mixes them
into one dataset, every batch from one source with the other source's tasks
masked (placeholder label, sample weight 0), and plain `model.fit` trains one
HydraNet on both; `SourceValidation` reports each source's metrics.

    python examples/shapes_two_sources.py --epochs 5 --schedule round_robin
    python examples/shapes_two_sources.py --schedule temperature --temperature 2

No download: the scenes are generated (`keras_mtl.datasets.shapes`).
"""

import argparse
import sys

import keras

import keras_mtl
from keras_mtl import data
from keras_mtl.datasets import shapes

SOURCES = {"classes": ["shape", "count"], "geometry": ["size", "position"]}


def make_tasks():
    return [
        keras_mtl.tasks.MulticlassClassification(
            "shape", num_classes=shapes.NUM_CLASSES, class_names=list(shapes.CLASS_NAMES)
        ),
        keras_mtl.tasks.Regression("count", loss="mae"),
        keras_mtl.tasks.Regression("size", loss="mae"),
        keras_mtl.tasks.Regression("position", units=2, loss="mae"),
    ]


def make_trunk(image_size, filters=16):
    """A small CNN (the demo runs on a laptop CPU in seconds)."""
    inputs = keras.Input((image_size, image_size, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    for i in range(3):
        x = keras.layers.Conv2D(filters * 2**i, 3, strides=2, padding="same", activation="relu")(x)
    return keras.Model(inputs, x, name="trunk")


def make_sources(split, sizes, image_size, batch_size, seed, shuffle):
    """`{source: batched dataset}`, each labelled for its own tasks."""
    sources = {}
    for i, (name, tasks) in enumerate(SOURCES.items()):
        ds = shapes.load(split, sizes[name], image_size, tasks=tasks, seed=seed + i)
        if shuffle:
            ds = ds.shuffle(sizes[name], seed=seed + i, reshuffle_each_iteration=True)
        sources[name] = ds.batch(batch_size)
    return sources


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--classes-examples", type=int, default=768)
    parser.add_argument("--geometry-examples", type=int, default=256)
    parser.add_argument("--validation-examples", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--schedule", default="round_robin", choices=data.SCHEDULES)
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--epoch", default="longest", choices=data.EPOCHS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    sizes = {"classes": args.classes_examples, "geometry": args.geometry_examples}
    train = data.interleave(
        make_sources("train", sizes, args.image_size, args.batch_size, args.seed, True),
        args.schedule,
        temperature=args.temperature if args.schedule == "temperature" else None,
        num_epochs=args.epochs if args.schedule == "annealed" else None,
        epoch=args.epoch,
        seed=args.seed,
    )
    validation = make_sources(
        "validation",
        dict.fromkeys(SOURCES, args.validation_examples),
        args.image_size,
        args.batch_size,
        args.seed,
        False,
    )

    model = keras_mtl.MultiTaskModel(
        make_trunk(args.image_size), make_tasks(), head_units=(32,), name="two_sources"
    )
    model.compile(optimizer=keras.optimizers.Adam(2e-3))
    history = model.fit(
        train,
        epochs=args.epochs,
        callbacks=[data.SourceValidation(validation)],
        verbose=args.verbose,
    )

    print(f"\n{args.schedule}, {int(train.cardinality())} batches per epoch")
    print("| source | task | metric | validation |")
    print("| --- | --- | --- | --- |")
    for source, tasks in SOURCES.items():
        for task in tasks:
            prefix = f"val_{source}_{task}_"
            for key, values in sorted(history.history.items()):
                if key.startswith(prefix):
                    print(f"| {source} | {task} | {key[len(prefix):]} | {values[-1]:.4f} |")
    return history


if __name__ == "__main__":
    main(sys.argv[1:])
