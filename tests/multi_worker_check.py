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
    with strategy.scope():
        built = model(method, mode)
    x, y = data()  # 5 global steps, partial labels: the workers hold different counts
    history = built.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(8), epochs=1, verbose=0)
    print("REPLICAS", strategy.num_replicas_in_sync, "LOSS", history.history["loss"][-1])
    np.savez(os.path.join(outdir, name + ".npz"),
             *[keras.ops.convert_to_numpy(v) for v in built.trainable_variables])


if __name__ == "__main__":
    main(*sys.argv[1:])
