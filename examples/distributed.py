"""One HydraNet, the same update on one device and on two: TensorFlow's
`MirroredStrategy` and JAX's `keras.distribution.DataParallel`.

    python examples/distributed.py                         # both engines
    python examples/distributed.py --method pcgrad --mode representation
    python examples/distributed.py --engine jax --method famo

For each engine the same model is trained twice on the same global batches,
once on one device and once split over two, and the largest difference of
the trained weights is printed: with keras_mtl's cross-replica reductions (a
task's loss is its labelled examples' mean over the *global* batch, the
per-task gradients and their Gram matrix are summed over replicas) the
difference is float round-off, for every weighting method, loss- or
gradient-level, its state included (docs/reliability.md).

Two devices on a machine without accelerators: TensorFlow splits its CPU
into two logical devices, JAX gets two host devices from
`XLA_FLAGS=--xla_force_host_platform_device_count=2`. Both are fixed when the
framework starts, so each engine runs in a process of its own (this script
starts them). oneDNN is off for TensorFlow: its convolution kernels, run by
two logical devices of one CPU at once, now and then return wrong filter
gradients on one of them; real devices (GPUs) do not share a CPU.

Offline: the shapes scenes are generated (`keras_mtl.datasets.shapes`).
"""

import argparse
import contextlib
import os
import subprocess
import sys

ENGINES = ("tensorflow", "jax")
DEVICES = 2
TASKS = ("shape", "size", "position")


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=ENGINES, default=None,
                        help="one engine, in this process (default: each in its own)")
    parser.add_argument("--method", default="pcgrad", help="a weighting method's registry name")
    parser.add_argument("--mode", default="params", choices=("params", "representation"),
                        help="a gradient-level method's mode")
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32, help="the global batch")
    parser.add_argument("--epochs", type=int, default=2)
    return parser.parse_args(argv)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    if args.engine is not None:
        return {args.engine: run(args)}
    results = {}
    for engine in ENGINES:
        done = subprocess.run(
            [sys.executable, os.path.abspath(__file__), *argv, "--engine", engine],
            env=engine_environment(engine), capture_output=True, text=True,
        )
        if done.returncode != 0:
            raise SystemExit(f"The {engine} run failed:\n{done.stderr[-3000:]}")
        print(done.stdout, end="", flush=True)
        results[engine] = float(done.stdout.split()[-1])
    return results


def engine_environment(engine):
    """The environment a process of `engine` must start with."""
    env = dict(os.environ, KERAS_BACKEND=engine, TF_CPP_MIN_LOG_LEVEL="2")
    if engine == "tensorflow":
        env["TF_ENABLE_ONEDNN_OPTS"] = "0"
    else:
        flag = f"--xla_force_host_platform_device_count={DEVICES}"
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {flag}".strip()
    return env


def run(args):
    """Trains on one device and on two; prints and returns the largest
    weight difference."""
    import keras
    import numpy as np

    if keras.backend.backend() != args.engine:
        raise SystemExit(
            f"--engine {args.engine} needs KERAS_BACKEND={args.engine}; this process runs "
            f"{keras.backend.backend()}. Leave --engine out to run each engine in its own process."
        )
    one_device, two_devices = (tensorflow_scopes if args.engine == "tensorflow" else jax_scopes)()
    with one_device:
        one = train(args)
    with two_devices:
        two = train(args)
    difference = max(float(np.max(np.abs(a - b))) for a, b in zip(one, two))
    engine = ("tf.distribute.MirroredStrategy" if args.engine == "tensorflow"
              else "keras.distribution.DataParallel")
    print(f"{args.engine}: {engine}, {DEVICES} devices vs 1, {args.method} ({args.mode}), "
          f"{args.epochs} epochs: largest weight difference {difference:.2e}")
    return difference


def tensorflow_scopes():
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * DEVICES)
    devices = [d.name for d in (tf.config.list_logical_devices("GPU")
                                or tf.config.list_logical_devices("CPU"))][:DEVICES]
    return (tf.distribute.OneDeviceStrategy(devices[0]).scope(),
            tf.distribute.MirroredStrategy(devices).scope())


def jax_scopes():
    import jax
    import keras

    @contextlib.contextmanager
    def data_parallel():
        keras.distribution.set_distribution(
            keras.distribution.DataParallel(devices=jax.devices()[:DEVICES]))
        try:
            yield
        finally:
            keras.distribution.set_distribution(None)

    return contextlib.nullcontext(), data_parallel()


def train(args):
    """The HydraNet trained from the same initial weights; its trained
    variables as NumPy arrays."""
    import keras

    import keras_mtl
    from keras_mtl.datasets import shapes

    keras.utils.set_random_seed(0)
    tasks = [
        keras_mtl.tasks.MulticlassClassification("shape", num_classes=shapes.NUM_CLASSES),
        keras_mtl.tasks.Regression("size"),
        keras_mtl.tasks.Regression("position", units=2),
    ]
    inputs = keras.Input((args.image_size, args.image_size, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    for filters in (8, 16):  # no batch norm: its statistics are per replica
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu")(x)
    model = keras_mtl.build_model(keras.Model(inputs, x), tasks, head_units=(16,))
    method = keras_mtl.weighting.get_class(args.method)
    arguments = method.arguments_from_tasks(tasks)
    if method.level == "gradient":
        arguments["mode"] = args.mode
    weighting = method(**arguments)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), weighting=weighting)

    images, labels = shapes.generate("train", args.examples, args.image_size, list(TASKS))
    model.fit(images, labels, batch_size=args.batch_size, epochs=args.epochs, shuffle=False,
              verbose=0)
    return [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]


if __name__ == "__main__":
    main()
