"""Child process for tests/test_multi_worker.py.

Usage:
    python multi_worker_check.py OUTDIR METHOD MODE single
        trains on one worker, one replica;
    python multi_worker_check.py OUTDIR METHOD MODE worker INDEX PORT0 PORT1
        is worker INDEX of a 2-worker `MultiWorkerMirroredStrategy` cluster
        on 127.0.0.1 (TF_CONFIG set here, before TensorFlow starts).

Both write `OUTDIR/<single|worker_INDEX>.npz` with the trained variables.
Same model, data and global batch of 8 in both: the data is split between
the workers by tf.data auto-sharding, as in a real multi-worker job.
"""

import json
import os
import sys

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_mtl  # noqa: E402
from keras_mtl import tasks as T  # noqa: E402


def data(n=40):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (n, 16, 16, 3)).astype("float32")
    y = {
        "a": rng.normal(size=(n, 1)).astype("float32"),
        "b": rng.integers(0, 2, (n, 1)).astype("float32"),
        "s": rng.integers(0, 3, (n, 16, 16)).astype("int32"),
    }
    # Partial labels: the workers hold different label counts.
    y["a"][rng.random(n) < 0.5] = np.nan
    y["s"][rng.random(n) < 0.3] = -1
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(8)  # 5 global steps


def main(outdir, method, mode, role, *cluster):
    if role == "worker":
        # Read by the strategy's cluster resolver when it is created.
        os.environ["TF_CONFIG"] = json.dumps({
            "cluster": {"worker": [f"127.0.0.1:{p}" for p in cluster[1:]]},
            "task": {"type": "worker", "index": int(cluster[0])},
        })
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        name = f"worker_{cluster[0]}"
    else:
        strategy = tf.distribute.get_strategy()
        name = "single"
    with strategy.scope():
        keras.utils.set_random_seed(0)
        inputs = keras.Input((16, 16, 3))
        x = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu")(inputs)
        trunk = keras.Model(inputs, keras.layers.Conv2D(4, 3, strides=2, padding="same")(x))
        tasks = [T.Regression("a"), T.BinaryClassification("b"), T.Segmentation("s", 3)]
        model = keras_mtl.build_model(trunk, tasks, head_units=(8,))
        weighting = keras_mtl.weighting.get_class(method)(mode=mode)
        model.compile(optimizer=keras.optimizers.SGD(0.01), weighting=weighting)
    history = model.fit(data(), epochs=1, verbose=0)
    print("REPLICAS", strategy.num_replicas_in_sync, "LOSS", history.history["loss"][-1])
    np.savez(os.path.join(outdir, name + ".npz"),
             *[keras.ops.convert_to_numpy(v) for v in model.trainable_variables])


if __name__ == "__main__":
    main(*sys.argv[1:])
