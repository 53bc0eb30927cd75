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
import traceback

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from distribution_cases import data, model  # noqa: E402


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
    x, y = data()  # 5 global steps, partial labels: the workers hold different counts
    if method == "plain":
        return plain_fit(strategy, x, y["a"])
    with strategy.scope():
        built = model(method, mode)
    history = built.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(8), epochs=1, verbose=0)
    print("REPLICAS", strategy.num_replicas_in_sync, "LOSS", history.history["loss"][-1])
    np.savez(os.path.join(outdir, name + ".npz"),
             *[keras.ops.convert_to_numpy(v) for v in built.trainable_variables])


def plain_fit(strategy, x, y):
    """A plain Keras model (no keras_mtl) fitted under `strategy`: prints
    `PLAIN ok`, or `PLAIN <error type>` where Keras fails
    (keras-team/keras#20585)."""
    with strategy.scope():
        plain = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Flatten(),
                                  keras.layers.Dense(1)])
        plain.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    keras.config.disable_traceback_filtering()  # the frames say where Keras fails
    try:
        plain.fit(np.nan_to_num(x), np.nan_to_num(y), batch_size=8, epochs=1, verbose=0)
    except Exception as error:  # the outcome is the test's to judge
        # Where in Keras: the innermost frame of its trainer.
        frames = [f.name for f in traceback.extract_tb(error.__traceback__)
                  if "keras" in f.filename and "trainer" in f.filename]
        print("PLAIN", type(error).__name__, frames[-1:], str(error)[:100].replace("\n", " "),
              flush=True)
        return
    print("PLAIN ok", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
