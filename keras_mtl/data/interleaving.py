"""Multi-dataset training inside `model.fit`.

Several `tf.data` sources, each labelled for its own subset of tasks (a movie
review corpus labelled for `movie`, a restaurant corpus labelled for `yelp`),
are mixed into one dataset that plain `model.fit` consumes:

- every batch comes from one source and carries every task key: a task the
  source does not label gets a placeholder holding the task's missing-label
  marker (NaN for floats, -1 for signed integers) and a sample weight of 0,
  so the model's masking gives it no loss, no gradient and no metric update;
- a schedule picks the source of each batch: `round_robin` (exact
  alternation, the "movie + yelp" story of seed 003), `proportional` (by
  size), `temperature` (p_i ∝ N_i^(1/T)) and `annealed` (Stickland & Murray,
  2019, "BERT and PALs", ICML: p_i ∝ N_i^α with α = 1 - 0.8 (e - 1)/(E - 1)
  over epochs e = 1..E, from proportional towards uniform);
- the epoch has a fixed, explicit length, so Keras knows it (progress bar,
  callbacks, `steps_per_epoch`-free `fit`).

The schedules are in `keras_mtl.data.schedules`, the padding of sources in
`keras_mtl.data.sources`; `SourceValidation` (`keras_mtl.data.SourceValidation`)
is the validation side.

Sources are batched (see `interleave` for why); everything is tf.data ops,
prefetched, with no Python generator in the hot path.
"""

import numpy as np

from keras_mtl._optional import require
from keras_mtl._validation import check_choice
from keras_mtl._validation import check_int
from keras_mtl._validation import check_positive_int
from keras_mtl.data.schedules import ANNEALED_DECAY
from keras_mtl.data.schedules import EPOCHS
from keras_mtl.data.schedules import SCHEDULES
from keras_mtl.data.schedules import check_schedule_arguments
from keras_mtl.data.schedules import epoch_length
from keras_mtl.data.schedules import exponent
from keras_mtl.data.schedules import sampling_probabilities
from keras_mtl.data.sources import batch_sources
from keras_mtl.data.sources import Mixer
from keras_mtl.data.sources import check_datasets
from keras_mtl.data.sources import repeat_forever

tf = require("tensorflow", "keras_mtl.data (tf.data pipelines)")


def interleave(
    datasets,
    schedule="round_robin",
    *,
    temperature=None,
    num_epochs=None,
    epoch="longest",
    steps_per_epoch=None,
    sizes=None,
    batch_size=None,
    map_fn=None,
    seed=None,
    initial_epoch=0,
):
    """Mixes several labelled sources into one dataset for `model.fit`.

    Each source yields `(x, {task: label})` or `(x, {task: label},
    sample_weight)` batches, labelled for its own subset of the tasks. The
    result yields `(x, y, sample_weight)` batches, each from one source,
    where `y` has every task key of the union of the sources and
    `sample_weight` is a dict `{task: float32 (batch,)}`: a task the source
    does not label gets a placeholder of the right shape and dtype holding
    the task's missing marker (NaN for float labels, -1 for signed integer
    labels; the empty string, False or 0 for other dtypes) and a sample
    weight of 0, so `MultiTaskModel` gives it no loss, no gradient and no
    metric update. (NaN placeholders are for `MultiTaskModel`, which masks
    them before the loss; a plain Keras model would compute NaN · 0.)

    Sources are batched: each batch then comes from one source, as in the
    round-robin story (one set of labelled tasks per step, which gradient
    methods and batch statistics see whole); each source keeps its own
    batching (padding of text, bucketing, its own batch size); placeholders
    cost one fill per batch, not per example; and a source's size is its
    cardinality in batches, the unit an epoch is counted in. For unbatched
    sources pass `batch_size=`, which batches each one.

    The schedule picks the source of each batch:

    - `"round_robin"`: exact alternation, source 1, 2, ..., K, 1, 2, ...;
    - `"proportional"`: p_i ∝ N_i;
    - `"temperature"`: p_i ∝ N_i^(1/T) (`temperature=T`; T = 1 is
      proportional, T → ∞ uniform);
    - `"annealed"`: p_i ∝ N_i^α with α = 1 - 0.8 (e - 1)/(E - 1) at epoch
      e of E (`num_epochs=E`), from proportional towards uniform
      (Stickland & Murray, 2019).

    N_i, the size of source i, is its cardinality in batches, or
    `sizes[name]`; a source whose cardinality is infinite or unknown needs
    `sizes=` (except for round-robin with `steps_per_epoch`). Sampling is
    deterministic given `seed` and differs from epoch to epoch.

    Epoch length. Every iteration over the result yields exactly
    `steps_per_epoch` batches when given, otherwise (see `epoch_length`):
    `"longest"` (every source seen once, shorter ones restart), `"shortest"`
    (until the first source has been seen once) or `"sum"` (Σ N_i). Sources
    are repeated underneath, and each iteration (each `fit` epoch) starts
    every source afresh: shuffle them (`reshuffle_each_iteration=True`) so
    that `"shortest"` does not always leave out the same tail. For
    `"annealed"` the length is fixed across epochs (Keras wants one) and
    computed with the first epoch's, proportional, probabilities.

    How the epoch reaches the pipeline. A sampling schedule has no state of
    its own: epoch e's sequence of sources is drawn with seed `(seed, e)`.
    The dataset is built once and holds e (a `tf.Variable` on the CPU,
    `dataset.schedule_epoch`), which each new iteration reads once.
    `MultiTaskModel.fit` sets it to Keras' epoch index at each epoch's start
    (`ScheduleEpochs`), so a resumed run draws what the uninterrupted run
    drew: after `keras.callbacks.BackupAndRestore` restores the epoch, or
    after a `.keras` file is loaded and `fit(initial_epoch=...)` goes on
    (a killed epoch restarts from its first batch, as Keras restarts it).
    Transform the result further (`.map`, `.take`) and that attribute is
    gone: pass `callbacks=[ScheduleEpochs(dataset)]` with the dataset
    `interleave` returned. Without the callback (a plain Keras model, a
    loop of your own) the last batch of each iteration increments the count
    as it is handed over (after the prefetch buffer, so a batch prefetched
    but never consumed does not count): one epoch per complete pass, an
    `evaluate` on the same dataset included, starting at `initial_epoch`.
    The sources' own randomness (a `shuffle` reshuffled each iteration) is
    tf.data's: a new process starts it again, for any dataset `fit` reads.

    Cost. Per batch, the padding map and the choice add well under a
    millisecond of CPU (prefetched, off the training thread). Each iteration
    starts the sources' iterators and instantiates their functions: with two
    sources, a fixed ~20 ms of CPU per iterator for round-robin, ~40 ms for
    the sampling schedules, twice per epoch (Keras' two iterators), which
    matters only for epochs of a few dozen steps
    (`benchmarks/bench_data.py`).

    Args:
        datasets: Dict `{source_name: tf.data.Dataset}` (at least one).
        schedule: One of `"round_robin"`, `"proportional"`,
            `"temperature"`, `"annealed"`.
        temperature: T > 0, required by (and only for) `"temperature"`.
        num_epochs: E >= 1, the number of epochs, required by (and only
            for) `"annealed"`.
        epoch: `"longest"`, `"shortest"` or `"sum"`: how long an epoch is.
        steps_per_epoch: A fixed number of batches per epoch; overrides
            `epoch`.
        sizes: Optional dict `{source_name: number of batches}` overriding
            the cardinality of some sources.
        batch_size: If given, each source (of single examples) is batched
            with it (each batch still comes from one source). Sources that
            are batched already are refused.
        map_fn: Makes the sources' inputs agree: a function `x -> x` applied
            to every source's inputs, or a dict `{source_name: function}` for
            some of them (e.g. `{"small": lambda x: tf.image.resize(x, (64,
            64))}`). Without it, sources whose inputs differ in structure,
            dtype or shape raise a `ValueError` naming them.
        seed: Integer seed of the sampling schedules (drawn from NumPy's
            global generator when `None`, which `keras.utils.set_random_seed`
            seeds).
        initial_epoch: The epoch the first iteration draws for (0-based, as
            in `fit`), for loops without `ScheduleEpochs`.

    Returns:
        A finite `tf.data.Dataset` of `(x, y, sample_weight)` with a known
        cardinality (the epoch length), prefetched.

    Example:

    >>> import tensorflow as tf
    >>> a = tf.data.Dataset.from_tensor_slices(
    ...     (tf.zeros((6, 2)), {"age": tf.ones((6, 1))})).batch(2)
    >>> b = tf.data.Dataset.from_tensor_slices(
    ...     (tf.ones((2, 2)), {"gender": tf.ones((2,), "int32")})).batch(2)
    >>> ds = interleave({"a": a, "b": b}, "round_robin", epoch="longest")
    >>> int(ds.cardinality())
    6
    >>> x, y, sw = next(iter(ds.skip(1)))
    >>> y["age"].numpy()[:, 0].tolist(), y["gender"].numpy().tolist()
    ([nan, nan], [1, 1])
    >>> sw["age"].numpy().tolist(), sw["gender"].numpy().tolist()
    ([0.0, 0.0], [1.0, 1.0])
    """
    sources = check_datasets("datasets", datasets)
    schedule = check_choice("schedule", schedule, SCHEDULES)
    temperature, num_epochs = check_schedule_arguments(schedule, temperature, num_epochs)
    epoch = check_choice("epoch", epoch, EPOCHS)
    if steps_per_epoch is not None:
        steps_per_epoch = check_positive_int("steps_per_epoch", steps_per_epoch)
    sizes = _check_sizes(sizes, sources)
    if batch_size is not None:
        sources = batch_sources(sources, batch_size)
    if seed is None:
        seed = int(np.random.randint(0, 2**31 - 1))
    seed = check_int("seed", seed, minimum=0)
    initial_epoch = check_int("initial_epoch", initial_epoch, minimum=0)

    mixer = Mixer(sources, map_fn)
    padded = mixer.padded()
    sampled = schedule != "round_robin"
    names = list(sources)
    if sampled or steps_per_epoch is None:
        counts = [_source_size(name, sources[name], sizes) for name in names]
    if steps_per_epoch is None:
        first = sampling_probabilities(
            counts, schedule, temperature=temperature, num_epochs=num_epochs, epoch=1
        )
        steps_per_epoch = epoch_length(counts, first, epoch)
    steps = steps_per_epoch
    repeated = [repeat_forever(name, padded[name]) for name in names]

    if not sampled:
        # 0, 1, ..., K-1, 0, 1, ...: no function to instantiate per epoch.
        choices = tf.data.Dataset.range(len(names)).repeat().take(steps)
        mixed = tf.data.Dataset.choose_from_datasets(repeated, choices)
        mixed = mixed.prefetch(tf.data.AUTOTUNE)
        epoch_variable = None
    else:
        with tf.device("/cpu:0"):
            epoch_variable = tf.Variable(
                initial_epoch, dtype=tf.int64, trainable=False, name="schedule_epoch"
            )
        mixed = _sampled(
            repeated, counts, schedule, temperature, num_epochs, steps, seed, epoch_variable
        )
    mixed = mixed.apply(tf.data.experimental.assert_cardinality(steps))
    options = tf.data.Options()
    # The epoch counter must move only when its batch is consumed: no
    # prefetch may be injected after the counting map (see `_sampled`).
    options.experimental_optimization.inject_prefetch = False
    options.deterministic = True
    mixed = mixed.with_options(options)
    # What `ScheduleEpochs` (added by `MultiTaskModel.fit`) sets at each
    # epoch's start; `None`: round-robin draws nothing.
    mixed.schedule_epoch = epoch_variable
    return mixed


def _sampled(repeated, counts, schedule, temperature, num_epochs, steps, seed, completed):
    """Choose-from-datasets with an epoch-aware, seeded choice sequence;
    `completed` is the 0-based epoch the next iteration draws for."""
    log_sizes = tf.constant(np.log(np.asarray(counts, np.float64)), tf.float64)
    if schedule == "annealed":
        decay = 0.0 if num_epochs == 1 else ANNEALED_DECAY / (num_epochs - 1)
        last = num_epochs - 1
    else:
        decay, last = 0.0, 0
    alpha0 = 1.0 if schedule == "annealed" else exponent(schedule, temperature, num_epochs, 1)

    def iteration_choices(_):
        done = completed.read_value()
        # α for the 1-based epoch done + 1, clipped to the last epoch.
        alpha = alpha0 - decay * tf.cast(tf.minimum(done, last), tf.float64)
        logits = tf.cast(alpha * log_sizes, tf.float32)[tf.newaxis, :]
        draws = tf.random.stateless_categorical(
            logits, steps, seed=tf.stack([tf.constant(seed, tf.int64), done]), dtype=tf.int64
        )
        return tf.data.Dataset.from_tensor_slices(draws[0])

    # Read once per iteration: when the iterator starts pulling.
    choices = tf.data.Dataset.range(1).flat_map(iteration_choices)
    mixed = tf.data.Dataset.choose_from_datasets(repeated, choices)
    mixed = mixed.prefetch(tf.data.AUTOTUNE)

    def count(element, index):
        # Synchronous and after the prefetch: runs when the batch is taken.
        bump = completed.assign_add(tf.cast(tf.equal(index, steps - 1), tf.int64))
        with tf.control_dependencies([bump]):
            return tf.nest.map_structure(tf.identity, element)

    return tf.data.Dataset.zip((mixed, tf.data.Dataset.range(steps))).map(count)


def _source_size(name, ds, sizes):
    if name in sizes:
        return sizes[name]
    cardinality = int(ds.cardinality())
    if cardinality == tf.data.INFINITE_CARDINALITY or cardinality == tf.data.UNKNOWN_CARDINALITY:
        kind = "infinite" if cardinality == tf.data.INFINITE_CARDINALITY else "unknown"
        raise ValueError(
            f"Invalid value received for argument `datasets`. The size of source "
            f"{name!r} is needed (by the schedule or the epoch length) but its "
            f"cardinality is {kind}. Pass `sizes={{{name!r}: number_of_batches}}`, "
            "or, with schedule='round_robin', `steps_per_epoch=`."
        )
    if cardinality == 0:
        raise ValueError(
            f"Invalid value received for argument `datasets`. Source {name!r} is empty."
        )
    return cardinality


def _check_sizes(sizes, sources):
    if sizes is None:
        return {}
    if not isinstance(sizes, dict):
        raise ValueError(
            "Invalid value received for argument `sizes`. Expected a dict "
            f"{{source_name: number_of_batches}}. Received: sizes={sizes!r}"
        )
    unknown = sorted(set(sizes) - set(sources))
    if unknown:
        raise ValueError(
            "Invalid value received for argument `sizes`. Expected keys among the "
            f"sources {list(sources)}. Received unknown keys {unknown}."
        )
    return {name: check_positive_int(f"sizes[{name!r}]", n) for name, n in sizes.items()}
