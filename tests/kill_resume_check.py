"""Child process for tests/test_kill_resume.py.

Usage:
    python kill_resume_check.py [--import MODULE] WORKDIR METHOD [METHOD ...]
        trains each method for 3 epochs without interruption;
    python kill_resume_check.py WORKDIR METHOD --kill-at EPOCH STEP
        trains with `BackupAndRestore` and SIGKILLs its own process after
        step STEP of epoch EPOCH (0-based); run again without `--kill-at` to
        resume from the backup.

`--import MODULE` imports a module first (from this directory or the
path): one that registers a weighting method of its own, which is then
known by name like the built-in ones.

METHOD@SCHEDULE (e.g. `uncertainty@temperature`) trains METHOD on two
sources mixed by `keras_mtl.data.interleave` with that sampling schedule
instead of on arrays, and appends each epoch's sources to
`WORKDIR/<METHOD@SCHEDULE>.order` (a JSON line per finished epoch).

Each finished run writes `WORKDIR/<method>.npz`: every model variable
(weighting state and seed-generator states included), in order.
"""

import importlib
import inspect
import json
import os
import signal
import sys

import keras
import numpy as np

import keras_mtl
from keras_mtl import tasks as T
from keras_mtl import weighting as W

EPOCHS = 3
TASKS = [T.Regression("a"), T.BinaryClassification("b"), T.MulticlassClassification("c", 3)]
NAMES = [t.name for t in TASKS]

#: Arguments for the built-in methods that need (or are seeded by) them;
#: any other registered method is built from its defaults and
#: `arguments_from_tasks`.
ARGUMENTS = {
    "static": {"weights": {"a": 0.5, "b": 2.0, "c": 1.0}},
    "inverse_size": {"counts": {"a": 24, "b": 20, "c": 32}},
    "rlw": {"seed": 3},
    "pcgrad": {"seed": 3},
    "grad_vac": {"seed": 3},
    "grad_drop": {"seed": 3},
    # The nadir epoch first: the kill in epoch 1 falls in STCH proper, with
    # the nadir and the epoch count to resume.
    "stch": {"warmup_epochs": 0},
}


def data(n=32):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (n, 16, 16, 3)).astype("float32")
    y = {
        "a": rng.normal(size=(n, 1)).astype("float32"),
        "b": rng.integers(0, 2, (n, 1)).astype("float32"),
        "c": rng.integers(0, 3, (n,)).astype("int32"),
    }
    # Partial labels, so masking state is part of what must resume exactly.
    y["a"][rng.random(n) < 0.25] = np.nan
    y["b"][rng.random(n) < 0.25] = -1
    return x, y


#: The `interleave` arguments of each schedule METHOD@SCHEDULE may name.
SCHEDULES = {"temperature": {"temperature": 2.0}, "annealed": {"num_epochs": EPOCHS}}


def interleaved(schedule):
    """Source "ab" (6 batches) labels tasks a and b, source "c" (2) task c."""
    import tensorflow as tf

    x, y = data()
    ab = tf.data.Dataset.from_tensor_slices((x[:24], {"a": y["a"][:24], "b": y["b"][:24]}))
    c = tf.data.Dataset.from_tensor_slices((x[24:], {"c": y["c"][24:]}))
    return keras_mtl.data.interleave(
        {"ab": ab.batch(4), "c": c.batch(4)}, schedule, seed=5, **SCHEDULES[schedule])


class SourceOrder(keras.callbacks.Callback):
    """Appends the source of each batch of an epoch to `path` when the epoch
    ends, told by whether task c's labelled count grew."""

    def __init__(self, path):
        super().__init__()
        self.path = path

    def on_epoch_begin(self, epoch, logs=None):
        self.order, self.seen = [], 0

    def on_train_batch_end(self, batch, logs=None):
        # `self.model` first: on JAX it writes the trainer's state back.
        checks = self.model._compiled_state.checks
        labelled_c = float(keras.ops.convert_to_numpy(checks.counts)[NAMES.index("c"), 3])
        self.order.append("c" if labelled_c > self.seen else "ab")
        self.seen = labelled_c

    def on_epoch_end(self, epoch, logs=None):
        with open(self.path, "a") as f:
            f.write(json.dumps({"epoch": epoch, "sources": self.order}) + "\n")


def make_model(method):
    keras.utils.set_random_seed(0)
    trunk = keras.Sequential([
        keras.Input((16, 16, 3)),
        keras.layers.Conv2D(4, 3, strides=2, activation="relu"),
        keras.layers.Conv2D(4, 3, strides=2),
    ])
    # Dropout: its seed generator is state that must resume too.
    model = keras_mtl.MultiTaskModel(trunk, TASKS, head_units=(8,), dropout=0.2)
    model.compile(optimizer="adam", weighting=make_weighting(method))
    return model


def make_weighting(method):
    cls = W.get_class(method)
    arguments = {**cls.arguments_from_tasks(TASKS), **ARGUMENTS.get(method, {})}
    if "seed" in inspect.signature(cls).parameters:
        arguments.setdefault("seed", 3)
    return cls(**arguments)


class KillAt(keras.callbacks.Callback):
    """SIGKILLs this process after a given step: no cleanup, no `finally`."""

    def __init__(self, epoch, step):
        super().__init__()
        self.kill_epoch, self.kill_step = epoch, step

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == (self.kill_epoch, self.kill_step):
            os.kill(os.getpid(), signal.SIGKILL)


def train(workdir, method, kill_at=None, backup=False):
    weighting, _, schedule = method.partition("@")
    model = make_model(weighting)
    callbacks = []
    if backup:
        callbacks.append(keras.callbacks.BackupAndRestore(os.path.join(workdir, method + "_backup")))
    if kill_at is not None:
        callbacks.append(KillAt(*kill_at))
    if schedule:
        # Nothing but the dataset: `fit` itself tells it the epoch.
        callbacks.append(SourceOrder(os.path.join(workdir, method + ".order")))
        model.fit(interleaved(schedule), epochs=EPOCHS, callbacks=callbacks, verbose=0)
    else:
        x, y = data()
        model.fit(x, y, batch_size=8, shuffle=False, epochs=EPOCHS, callbacks=callbacks,
                  verbose=0)
    values = [keras.ops.convert_to_numpy(v) for v in model.variables]
    np.savez(os.path.join(workdir, method + ".npz"), *values)


def main(argv):
    if argv[0] == "--import":
        importlib.import_module(argv[1])
        argv = argv[2:]
    workdir, rest = argv[0], argv[1:]
    if "--kill-at" in rest:
        i = rest.index("--kill-at")
        (method,), kill_at = rest[:i], (int(rest[i + 1]), int(rest[i + 2]))
        train(workdir, method, kill_at=kill_at, backup=True)
        sys.exit("not killed")  # KillAt did not fire: the test must fail.
    if rest[0] == "--resume":
        train(workdir, rest[1], backup=True)
        return
    for method in rest:
        train(workdir, method)


if __name__ == "__main__":
    main(sys.argv[1:])
