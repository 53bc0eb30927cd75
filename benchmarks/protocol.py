"""The quality benchmarks' shared protocol: training budget, tuned static
weights and the paired comparison over seeds.

- `callbacks(monitor, patience, mode)`: the budget rule every model of a
  benchmark gets: `ReduceLROnPlateau` and `EarlyStopping(restore_best_weights=
  True)` on one validation quantity (a single-task model's own metric, a
  multi-task model's validation Δm from `keras_mtl.objectives.DeltaM`).
- `learning_curve(history, monitor, mode)`: what a model's `History` says
  about its training (per-epoch curves, best epoch, epochs run).
- `seeded_batches(x, y, batch_size, epochs, seed)`: every model of a seed
  sees the same batches in the same order (common random numbers: the
  differences between methods of one seed are then not blurred by data
  order).
- `tune_static(...)`: KerasTuner random search over the per-task weights of
  `keras_mtl.weighting.Static` (`static/weight_<task>`, 0.1 to 10, log scale:
  `keras_mtl.tuning.MultiTaskHyperModel`'s space) on a validation objective.
- `paired_comparison(a, b)`: per-seed differences a - b of two methods' Δm
  (same seed, same baselines), their mean and Student's t confidence
  interval (n - 1 degrees of freedom), and a verdict: "better" when the
  interval lies below 0 (Δm: lower is better), "worse" when above, "within
  seed noise" otherwise, "too few seeds" with one seed (no interval).
"""

import math
import time

import numpy as np

#: What `paired_comparison` can say.
VERDICTS = ("better", "worse", "within seed noise", "too few seeds")

#: Student's t quantiles at 0.975 (95 % two-sided intervals) for 1 to 30
#: degrees of freedom, used when SciPy is not installed.
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
         2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
         2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_quantile(df, confidence=0.95):
    """The two-sided Student's t quantile `t_{(1 + confidence) / 2, df}`.

    SciPy's when it is installed; otherwise the 95 % table `T_975` (exact to
    3 decimals up to 30 degrees of freedom, the 30's beyond: slightly wide).
    """
    if df < 1:
        raise ValueError(f"Invalid value received for argument `df`. Expected an integer >= 1. "
                         f"Received: df={df}")
    try:
        from scipy import stats
    except ImportError:
        if confidence != 0.95:
            raise ValueError("Without SciPy only confidence=0.95 is available. "
                             f"Received: confidence={confidence}") from None
        return T_975[min(df, len(T_975)) - 1]
    return float(stats.t.ppf((1 + confidence) / 2, df))


def paired_comparison(a_per_seed, b_per_seed, confidence=0.95):
    """Is method a's Δm lower than b's beyond seed noise?

    Args:
        a_per_seed: Δm of method a, one value per seed.
        b_per_seed: Δm of method b on the same seeds, in the same order
            (same baselines, same initial trunk and batches).
        confidence: Level of the two-sided interval.

    Returns:
        `{"n", "mean", "low", "high", "verdict"}`: the mean of the per-seed
        differences a - b, its confidence interval `mean ± t s / sqrt(n)`
        (s: sample standard deviation of the differences; None with one
        seed) and the verdict (`VERDICTS`).

    Example:

    >>> found = paired_comparison([-3.0, -2.0, -4.0], [0.0, 0.0, 0.0])
    >>> found["mean"], round(found["low"], 3), round(found["high"], 3), found["verdict"]
    (-3.0, -5.484, -0.516, 'better')
    """
    a = np.asarray(a_per_seed, dtype=float)
    b = np.asarray(b_per_seed, dtype=float)
    if a.ndim != 1 or a.shape != b.shape or not len(a):
        raise ValueError(
            "Invalid value received for arguments `a_per_seed`, `b_per_seed`. Expected "
            f"two non-empty lists of the same length. Received: {list(a)}, {list(b)}")
    differences = a - b
    n = len(differences)
    mean = float(differences.mean())
    if n < 2:
        return {"n": n, "mean": mean, "low": None, "high": None, "verdict": "too few seeds"}
    half = t_quantile(n - 1, confidence) * float(differences.std(ddof=1)) / math.sqrt(n)
    low, high = mean - half, mean + half
    verdict = "better" if high < 0 else "worse" if low > 0 else "within seed noise"
    return {"n": n, "mean": mean, "low": low, "high": high, "verdict": verdict}


def callbacks(monitor, patience, mode="min", lr_factor=0.5, lr_patience=2, min_lr=1e-5):
    """`[ReduceLROnPlateau, EarlyStopping(restore_best_weights=True)]` on `monitor`.

    The learning rate is multiplied by `lr_factor` after `lr_patience`
    epochs without improvement; training stops after `patience` epochs
    without improvement and the best epoch's weights are restored (also
    when the last epoch is reached). `mode` is "min" or "max" (accuracy).
    """
    import keras

    return [
        keras.callbacks.ReduceLROnPlateau(monitor=monitor, mode=mode, factor=lr_factor,
                                          patience=lr_patience, min_lr=min_lr),
        keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=patience,
                                      restore_best_weights=True),
    ]


def learning_curve(history, monitor, mode="min", keys=("loss",), digits=5):
    """What a `History` says: `{"monitor", "values", "best_epoch",
    "epochs_run", <key>: [...]}`, epochs counted from 1; `values` is the
    monitored quantity per epoch, `best_epoch` the first epoch at its best
    (the one `EarlyStopping` restores)."""
    history = getattr(history, "history", history)
    values = [float(v) for v in history[monitor]]
    best = int(np.argmax(values) if mode == "max" else np.argmin(values))
    curve = {"monitor": monitor, "values": [round(v, digits) for v in values],
             "best_epoch": best + 1, "epochs_run": len(values)}
    for key in keys:
        if key in history:
            curve[key] = [round(float(v), digits) for v in history[key]]
    return curve


def seeded_batches(x, y, batch_size, epochs, seed):
    """A `tf.data.Dataset` of `epochs` shuffled passes over `(x, y)` and the
    number of steps per epoch, for `fit(dataset, steps_per_epoch=steps,
    epochs=epochs)`.

    Epoch e visits the examples in the order
    `numpy.random.default_rng([seed, e]).permutation(n)`, whatever the model,
    so every model of a seed sees the same batches in the same order (Keras'
    own shuffling draws from the global generator, which building models of
    different sizes advances differently). `x` and `y` are arrays or nested
    structures (dicts) of arrays with a leading axis n.
    """
    import tensorflow as tf

    n = len(tf.nest.flatten(x)[0])
    orders = np.stack([np.random.default_rng([seed, e]).permutation(n) for e in range(epochs)])
    data = tf.nest.map_structure(tf.constant, (x, y))
    batches = tf.data.Dataset.from_tensor_slices(orders).flat_map(
        lambda order: tf.data.Dataset.from_tensor_slices(order).batch(batch_size))
    batches = batches.map(
        lambda index: tf.nest.map_structure(lambda a: tf.gather(a, index), data))
    return batches.prefetch(2), math.ceil(n / batch_size)


def tune_static(tasks, trunk_factory, objective, train, validation, *, epochs, trials, seed,
                directory, callbacks=(), batch_size=None, input_shape=None, head_units=(64,),
                dropout=0.0, learning_rate=1e-3, project_name="static", fit_kwargs=None):
    """Random search over per-task `Static` weights on a validation objective.

    KerasTuner's `RandomSearch` over `keras_mtl.tuning.MultiTaskHyperModel`
    restricted to `weightings=("static",)` and one architecture (the trunk
    of `trunk_factory`, heads `head_units`, Adam at `learning_rate`), so the
    only searched hyperparameters are `static/weight_<task>` (0.1 to 10, log
    scale). Each trial trains one model as `fit` would with `callbacks`; its
    score is the objective's best epoch.

    Args:
        tasks: List of `keras_mtl.tasks.Task`.
        trunk_factory: `f(input_shape) -> keras.Model`, the shared trunk.
        objective: A `keras_mtl.objectives.TaskObjective` to minimise, e.g.
            `DeltaM(tasks, single_task_validation_metrics)`.
        train: `(x, y)` arrays, or a dataset (then pass `steps_per_epoch`
            in `fit_kwargs` if it repeats).
        validation: `(x, y)` or a dataset: the objective's data.
        epochs: Maximum epochs per trial.
        trials: Number of trials.
        seed: Seeds the search and the models' initial weights.
        directory: Folder for KerasTuner's files (overwritten).
        callbacks: Callbacks of every trial (copied per trial by KerasTuner),
            e.g. `callbacks(objective.key, patience)`.
        batch_size: With arrays.
        input_shape: Passed to `trunk_factory`; None for trunks with their
            own inputs.
        head_units: Hidden widths of each head (all equal: the hypermodel's
            heads are `head_depth` layers of `head_units`).
        dropout: Dropout rate in the heads.
        learning_rate: Adam's learning rate.
        project_name: KerasTuner project folder name.
        fit_kwargs: More arguments for `fit`.

    Returns:
        `{"weights": {task: weight}, "seconds": the search's wall time,
        "cpu_seconds": its CPU time (this process), "trials": trials,
        "best_score": the best trial's objective}`.
    """
    import keras
    import keras_tuner

    from keras_mtl import tuning

    head_units = tuple(head_units)
    if len(set(head_units)) > 1:
        raise ValueError("Invalid value received for argument `head_units`. Expected equal "
                         f"widths (layers of one width). Received: head_units={head_units}")
    names = [t.name for t in tasks]
    hypermodel = tuning.MultiTaskHyperModel(
        tasks, input_shape, backbones={"trunk": trunk_factory}, weightings=("static",),
        branch_points=(1.0,), head_units=head_units[:1] or (1,), head_depths=(len(head_units),),
        dropout_range=(dropout, dropout), learning_rate_range=(learning_rate, learning_rate),
        objectives=[objective])
    tuner = keras_tuner.RandomSearch(
        hypermodel, objective=keras_tuner.Objective(objective.key, "min"),
        max_trials=trials, seed=seed, directory=directory, project_name=project_name,
        overwrite=True)
    arguments = train if isinstance(train, tuple) else (train,)
    kwargs = dict(fit_kwargs or {})
    if batch_size is not None:
        kwargs["batch_size"] = batch_size
    keras.utils.set_random_seed(seed)
    wall, cpu = time.perf_counter(), time.process_time()
    tuner.search(*arguments, validation_data=validation, epochs=epochs, verbose=0,
                 callbacks=list(callbacks), **kwargs)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    best = tuner.get_best_hyperparameters()[0].values
    return {"weights": {n: float(best[f"static/weight_{n}"]) for n in names},
            "seconds": round(wall, 1), "cpu_seconds": round(cpu, 1), "trials": trials,
            "best_score": float(tuner.oracle.get_best_trials(1)[0].score)}
