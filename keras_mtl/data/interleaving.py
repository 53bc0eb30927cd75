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

`SourceValidation` (defined in `keras_mtl.training.source_validation`,
re-exported here) is the validation side: a callback that evaluates the
model on each source at epoch end and adds `val_<source>_<task>_<metric>`
to the logs that History records.

Sources are batched (see `interleave` for why); everything is tf.data ops,
prefetched, with no Python generator in the hot path.
"""

import math
import numbers

import numpy as np
import tensorflow as tf

from keras_mtl._validation import check_choice
from keras_mtl._validation import check_int
from keras_mtl._validation import check_positive_int
from keras_mtl.training.source_validation import SourceValidation  # noqa: F401  (re-exported)

SCHEDULES = ("round_robin", "proportional", "temperature", "annealed")
EPOCHS = ("longest", "shortest", "sum")
# Stickland & Murray (2019): the exponent falls linearly from 1 to 1 - 0.8.
ANNEALED_DECAY = 0.8


# --- probabilities and epoch lengths ------------------------------------------
def _exponent(schedule, temperature, num_epochs, epoch):
    """α in p_i ∝ N_i^α (0 is uniform, 1 proportional)."""
    if schedule == "round_robin":
        return 0.0
    if schedule == "proportional":
        return 1.0
    if schedule == "temperature":
        return 1.0 / temperature
    if num_epochs == 1:
        return 1.0
    e = min(max(int(epoch), 1), num_epochs)
    return 1.0 - ANNEALED_DECAY * (e - 1) / (num_epochs - 1)


def sampling_probabilities(
    sizes, schedule="proportional", *, temperature=None, num_epochs=None, epoch=1
):
    """The probability of drawing each source under a schedule.

    `round_robin` gives the long-run share of exact alternation (uniform).

    Args:
        sizes: Dict `{source: number of batches}` (or a list of sizes).
        schedule: One of `SCHEDULES`.
        temperature: T of the `temperature` schedule (p_i ∝ N_i^(1/T)).
        num_epochs: E of the `annealed` schedule.
        epoch: The 1-based epoch e of the `annealed` schedule (clipped to
            [1, E]).

    Returns:
        A float64 numpy array, one probability per source, in order.

    Example:

    >>> sampling_probabilities({"a": 90, "b": 10}).round(2).tolist()
    [0.9, 0.1]
    >>> sampling_probabilities({"a": 90, "b": 10}, "annealed", num_epochs=5,
    ...                        epoch=5).round(3).tolist()
    [0.608, 0.392]
    """
    schedule = check_choice("schedule", schedule, SCHEDULES)
    temperature, num_epochs = _check_schedule_arguments(schedule, temperature, num_epochs)
    values = list(sizes.values()) if isinstance(sizes, dict) else list(sizes)
    for value in values:
        check_positive_int("sizes", value)
    alpha = _exponent(schedule, temperature, num_epochs, epoch)
    weights = np.asarray(values, np.float64) ** alpha
    return weights / weights.sum()


def epoch_length(sizes, probabilities, epoch="longest"):
    """Batches per epoch for sources of `sizes` drawn with `probabilities`.

    - `"longest"`: until every source has been seen once (in expectation for
      the sampling schedules; shorter sources restart);
    - `"shortest"`: until the first source has been seen once;
    - `"sum"`: as many batches as all the sources hold together.

    With round-robin (uniform probabilities) over K sources these are
    K·max N_i, K·min N_i and Σ N_i; with `proportional` all three are Σ N_i.

    Example:

    >>> epoch_length([30, 10], [0.5, 0.5], "longest")
    60
    >>> epoch_length([30, 10], [0.5, 0.5], "shortest")
    20
    """
    epoch = check_choice("epoch", epoch, EPOCHS)
    sizes = [int(s) for s in (sizes.values() if isinstance(sizes, dict) else sizes)]
    if epoch == "sum":
        return sum(sizes)
    ratios = [n / p for n, p in zip(sizes, probabilities)]
    value = max(ratios) if epoch == "longest" else min(ratios)
    # N / (N / ΣN) can come out as ΣN + 1e-13: not a reason for one more step.
    return max(1, math.ceil(value * (1 - 1e-9)))


# --- the mixed dataset ----------------------------------------------------------
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

    How the epoch reaches the pipeline. The dataset is built once and
    `model.fit(ds, epochs=E)` needs no callback: the dataset holds a counter
    of completed iterations (a `tf.Variable` on the CPU), which the last
    batch of each iteration increments as it is handed over (after the
    prefetch buffer, so a batch prefetched but never consumed does not
    count), and which each new iteration reads once to draw its whole
    sequence of sources with seed `(seed, epoch)`. Keras creates an iterator
    at each epoch start, and one more it throws away at each epoch end (and
    may peek at one batch of another before training): they read the same
    count, so epoch e gets the probabilities of epoch e. (A peek does count
    when an epoch is one step long.) Any complete pass counts
    (an `evaluate` on the same dataset too); `initial_epoch` starts the count
    elsewhere, e.g. when training resumes.

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
        batch_size: If given, the sources are unbatched and each is batched
            with it (each batch still comes from one source).
        map_fn: Makes the sources' inputs agree: a function `x -> x` applied
            to every source's inputs, or a dict `{source_name: function}` for
            some of them (e.g. `{"small": lambda x: tf.image.resize(x, (64,
            64))}`). Without it, sources whose inputs differ in structure,
            dtype or shape raise a `ValueError` naming them.
        seed: Integer seed of the sampling schedules (drawn from NumPy's
            global generator when `None`, which `keras.utils.set_random_seed`
            seeds).
        initial_epoch: Number of epochs already done (0-based, as in `fit`).

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
    sources = _check_datasets("datasets", datasets)
    schedule = check_choice("schedule", schedule, SCHEDULES)
    temperature, num_epochs = _check_schedule_arguments(schedule, temperature, num_epochs)
    epoch = check_choice("epoch", epoch, EPOCHS)
    if steps_per_epoch is not None:
        steps_per_epoch = check_positive_int("steps_per_epoch", steps_per_epoch)
    sizes = _check_sizes(sizes, sources)
    if batch_size is not None:
        batch_size = check_positive_int("batch_size", batch_size)
        sources = {name: ds.batch(batch_size) for name, ds in sources.items()}
    if seed is None:
        seed = int(np.random.randint(0, 2**31 - 1))
    seed = check_int("seed", seed, minimum=0)
    initial_epoch = check_int("initial_epoch", initial_epoch, minimum=0)

    mixer = _Mixer(sources, map_fn)
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
    repeated = [padded[name].repeat() for name in names]

    if not sampled:
        # 0, 1, ..., K-1, 0, 1, ...: no function to instantiate per epoch.
        choices = tf.data.Dataset.range(len(names)).repeat().take(steps)
        mixed = tf.data.Dataset.choose_from_datasets(repeated, choices)
        mixed = mixed.prefetch(tf.data.AUTOTUNE)
    else:
        mixed = _sampled(
            repeated, counts, schedule, temperature, num_epochs, steps, seed, initial_epoch
        )
    mixed = mixed.apply(tf.data.experimental.assert_cardinality(steps))
    options = tf.data.Options()
    # The epoch counter must move only when its batch is consumed: no
    # prefetch may be injected after the counting map (see `_sampled`).
    options.experimental_optimization.inject_prefetch = False
    options.deterministic = True
    return mixed.with_options(options)


def _sampled(repeated, counts, schedule, temperature, num_epochs, steps, seed, initial_epoch):
    """Choose-from-datasets with an epoch-aware, seeded choice sequence."""
    with tf.device("/cpu:0"):
        completed = tf.Variable(
            initial_epoch, dtype=tf.int64, trainable=False, name="completed_epochs"
        )
    log_sizes = tf.constant(np.log(np.asarray(counts, np.float64)), tf.float64)
    if schedule == "annealed":
        decay = 0.0 if num_epochs == 1 else ANNEALED_DECAY / (num_epochs - 1)
        last = num_epochs - 1
    else:
        decay, last = 0.0, 0
    alpha0 = 1.0 if schedule == "annealed" else _exponent(schedule, temperature, num_epochs, 1)

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


class _Mixer:
    """Checks the sources' specs and pads each to the union of their tasks."""

    def __init__(self, sources, map_fn, extra_label_specs=None):
        map_fns = _check_map_fn(map_fn, sources)
        self.sources = sources
        self.normalisers = {}
        specs = {}
        for name, ds in sources.items():
            self.normalisers[name] = _normaliser(name, ds.element_spec, map_fns.get(name))
            specs[name] = ds.map(self.normalisers[name]).element_spec
        _check_inputs_agree({name: spec[0] for name, spec in specs.items()})
        self.own_tasks = {name: list(spec[1]) for name, spec in specs.items()}
        self.label_specs = _merge_label_specs(
            {name: spec[1] for name, spec in specs.items()}, extra_label_specs or {}
        )

    def padded(self):
        return {name: self.pad(name, ds) for name, ds in self.sources.items()}

    def pad(self, name, ds):
        normalise = self.normalisers[name]
        own = self.own_tasks[name]
        label_specs = self.label_specs

        def pad(*element):
            x, y, weights = normalise(*element)
            batch = tf.shape(y[own[0]])[0]
            labels, sample_weight = {}, {}
            for task, spec in label_specs.items():
                if task in y:
                    labels[task], sample_weight[task] = y[task], weights[task]
                else:
                    shape = tf.concat([[batch], tf.constant(spec.shape[1:].as_list(), tf.int32)], 0)
                    labels[task] = tf.fill(shape, _missing_marker(spec.dtype))
                    sample_weight[task] = tf.zeros([batch], tf.float32)
            return x, labels, sample_weight

        return ds.map(pad, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _normaliser(name, spec, map_fn):
    """`element -> (x, {task: label}, {task: float32 (batch,) weight})`."""
    expected = (
        f"Expected each source to yield batched `(x, {{task: label}})` or "
        f"`(x, {{task: label}}, sample_weight)` tuples"
    )
    if not isinstance(spec, tuple) or len(spec) not in (2, 3):
        raise ValueError(
            f"Invalid value received for argument `datasets`. {expected}. "
            f"Received: source {name!r} with element_spec={spec!r}"
        )
    labels = spec[1]
    if not isinstance(labels, dict) or not labels or not all(isinstance(k, str) for k in labels):
        raise ValueError(
            f"Invalid value received for argument `datasets`. {expected}, the labels "
            f"a non-empty dict keyed by task name. Received: source {name!r} with "
            f"labels {labels!r}"
        )
    for task, label in labels.items():
        if not isinstance(label, tf.TensorSpec):
            raise ValueError(
                f"Invalid value received for argument `datasets`. {expected}, each "
                f"label a dense tensor. Received: source {name!r}, label {task!r}: {label!r}"
            )
        if label.shape.rank == 0:
            raise ValueError(
                f"Invalid value received for argument `datasets`. {expected}. Source "
                f"{name!r} looks unbatched (label {task!r} is a scalar, {label!r}): "
                "batch it, or pass `batch_size=`."
            )
    weight_spec = spec[2] if len(spec) == 3 else None
    weight_specs = weight_spec if isinstance(weight_spec, dict) else (
        {} if weight_spec is None else {task: weight_spec for task in labels}
    )
    for task, w in weight_specs.items():
        if task not in labels:
            raise ValueError(
                "Invalid value received for argument `datasets`. The sample weights "
                f"of source {name!r} name task {task!r}, which it does not label "
                f"(labels: {list(labels)})."
            )
        if not isinstance(w, tf.TensorSpec) or not (
            w.shape.rank == 1 or (w.shape.rank == 2 and w.shape[-1] == 1)
        ):
            raise ValueError(
                "Invalid value received for argument `datasets`. Expected per-example "
                f"sample weights of shape (batch,). Received: source {name!r}, "
                f"task {task!r}: {w!r}"
            )
    tasks = list(labels)

    def normalise(*element):
        x, y = element[0], dict(element[1])
        w = element[2] if len(element) == 3 else None
        if map_fn is not None:
            x = map_fn(x)
        batch = tf.shape(y[tasks[0]])[0]
        ones = tf.ones([batch], tf.float32)
        per_example = lambda v: tf.reshape(tf.cast(v, tf.float32), [batch])  # noqa: E731
        if isinstance(w, dict):
            weights = {t: per_example(w[t]) if t in w else ones for t in tasks}
        elif w is not None:
            weights = dict.fromkeys(tasks, per_example(w))
        else:
            weights = dict.fromkeys(tasks, ones)
        return x, y, weights

    return normalise


def _check_inputs_agree(input_specs):
    names = list(input_specs)
    first = names[0]
    for name in names[1:]:
        a, b = input_specs[first], input_specs[name]
        try:
            tf.nest.assert_same_structure(a, b)
            agree = all(
                sa.is_compatible_with(sb) for sa, sb in zip(tf.nest.flatten(a), tf.nest.flatten(b))
            )
        except (ValueError, TypeError):
            agree = False
        if not agree:
            raise ValueError(
                "Invalid value received for argument `datasets`. Every source must "
                "yield inputs of one structure, dtype and shape, but source "
                f"{first!r} yields {a!r} and source {name!r} yields {b!r}. Pass "
                "`map_fn=` to map the sources' inputs to one spec, e.g. "
                f"map_fn={{{name!r}: lambda x: tf.image.resize(x, (64, 64))}}."
            )


def _merge_label_specs(source_label_specs, extra_label_specs):
    """`{task: TensorSpec}` over the union of the sources' tasks."""
    merged, owner = {}, {}
    for name, specs in source_label_specs.items():
        for task, spec in specs.items():
            if task not in merged:
                merged[task], owner[task] = spec, name
                continue
            if spec.dtype != merged[task].dtype or not spec.shape.is_compatible_with(
                merged[task].shape
            ):
                raise ValueError(
                    "Invalid value received for argument `datasets`. Sources "
                    f"{owner[task]!r} and {name!r} both label task {task!r}, with "
                    f"different specs: {merged[task]!r} and {spec!r}. Cast or reshape "
                    "one of them (`Dataset.map`) so that they agree."
                )
            merged[task] = tf.TensorSpec(merged[task].shape.merge_with(spec.shape), spec.dtype)
    for task, spec in extra_label_specs.items():
        merged.setdefault(task, spec)
    for task, spec in merged.items():
        lacking = [n for n, specs in source_label_specs.items() if task not in specs]
        if lacking and not spec.shape[1:].is_fully_defined():
            raise ValueError(
                "Invalid value received for argument `datasets`. Sources "
                f"{lacking} do not label task {task!r}, so they need a placeholder, "
                f"but its label shape {spec.shape} is not known beyond the batch "
                "axis. Give the labelling source a static shape (e.g. "
                "`Dataset.map` with `tf.ensure_shape`)."
            )
    return merged


def _missing_marker(dtype):
    if dtype.is_floating:
        return tf.constant(float("nan"), dtype)
    if dtype.is_integer and not dtype.is_unsigned:
        return tf.constant(-1, dtype)
    if dtype == tf.string:
        return tf.constant(b"", dtype)
    return tf.zeros((), dtype)


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


# --- padding a model's sources ----------------------------------------------
def _task_label_specs(model):
    """Label specs of a `MultiTaskModel`'s tasks (for sources lacking them)."""
    specs = {}
    image_shape = getattr(model, "image_shape", None)
    for task in getattr(model, "tasks", []):
        try:
            shape = task.label_shape(None, image_shape)
        except (TypeError, IndexError):
            continue
        dtype = tf.int32 if task.sparse_labels else tf.float32
        specs[task.name] = tf.TensorSpec(shape, dtype)
    return specs


# --- argument checks -------------------------------------------------------------
def _check_datasets(argument, datasets):
    if not isinstance(datasets, dict) or not datasets:
        raise ValueError(
            f"Invalid value received for argument `{argument}`. Expected a non-empty "
            f"dict {{source_name: tf.data.Dataset}}. Received: {argument}={datasets!r}"
        )
    for name, ds in datasets.items():
        if not isinstance(name, str) or not name:
            raise ValueError(
                f"Invalid value received for argument `{argument}`. Expected non-empty "
                f"string source names. Received: {name!r}"
            )
        if not isinstance(ds, tf.data.Dataset):
            raise ValueError(
                f"Invalid value received for argument `{argument}`. Expected a "
                f"`tf.data.Dataset` for each source. Received: {argument}[{name!r}]="
                f"{type(ds).__name__}"
            )
    return dict(datasets)


def _check_schedule_arguments(schedule, temperature, num_epochs):
    if schedule == "temperature":
        ok = (
            temperature is not None
            and not isinstance(temperature, bool)
            and isinstance(temperature, numbers.Real)
            and math.isfinite(temperature)
            and temperature > 0
        )
        if not ok:
            raise ValueError(
                "Invalid value received for argument `temperature`. Expected a "
                "finite float > 0 with schedule='temperature'. Received: "
                f"temperature={temperature!r}"
            )
        temperature = float(temperature)
    elif temperature is not None:
        raise ValueError(
            "Invalid value received for argument `temperature`. It is only used "
            f"with schedule='temperature'. Received: temperature={temperature!r} "
            f"with schedule={schedule!r}"
        )
    if schedule == "annealed":
        if num_epochs is None:
            raise ValueError(
                "Invalid value received for argument `num_epochs`. schedule='annealed' "
                "needs the number of epochs E (α goes from 1 at epoch 1 to 0.2 at "
                "epoch E). Received: num_epochs=None"
            )
        num_epochs = check_positive_int("num_epochs", num_epochs)
    elif num_epochs is not None:
        raise ValueError(
            "Invalid value received for argument `num_epochs`. It is only used with "
            f"schedule='annealed'. Received: num_epochs={num_epochs!r} with "
            f"schedule={schedule!r}"
        )
    return temperature, num_epochs


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


def _check_map_fn(map_fn, sources):
    if map_fn is None:
        return {}
    if callable(map_fn):
        return dict.fromkeys(sources, map_fn)
    if isinstance(map_fn, dict):
        unknown = sorted(set(map_fn) - set(sources))
        bad = [name for name, fn in map_fn.items() if not callable(fn)]
        if not unknown and not bad:
            return dict(map_fn)
    raise ValueError(
        "Invalid value received for argument `map_fn`. Expected a function "
        f"`x -> x` or a dict {{source_name: function}} over the sources "
        f"{list(sources)}. Received: map_fn={map_fn!r}"
    )
