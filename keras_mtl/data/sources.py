"""Sources of a mixed dataset: their specs checked, and each padded to the
union of the tasks.

A source labels its own subset of the tasks; padded, every batch carries
every task key: a task the source does not label gets a placeholder holding
the task's missing-label marker (NaN for floats, -1 for signed integers) and
a sample weight of 0, so the model's masking gives it no loss, no gradient
and no metric update. `interleave` and `SourceValidation` pad their sources
here.
"""

from keras_mtl._optional import require
from keras_mtl._validation import check_positive_int

tf = require("tensorflow", "keras_mtl.data (tf.data pipelines)")


def check_datasets(argument, datasets):
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
        if int(ds.cardinality()) == 0:
            raise ValueError(_empty_message(argument, name))
    return dict(datasets)


# The start of the message of an empty source found while iterating (its
# cardinality unknown until then, e.g. after `filter`): TensorFlow raises it
# as an op error, which `MultiTaskModel.fit` turns into this `ValueError`.
EMPTY_SOURCE = "Invalid value received for argument `datasets`. Source "


def _empty_message(argument, name):
    return (
        f"Invalid value received for argument `{argument}`. Source {name!r} holds no "
        "element (e.g. a `filter` that keeps nothing, or a `take`/`skip` past its "
        "end): each source must give at least one batch. Leave it out of the dict."
    )


def repeat_forever(name, ds):
    """`ds` repeated; at the end of a pass that gave no element (so `ds` is
    empty, and an endless repeat would give nothing), an op error whose
    message starts with `EMPTY_SOURCE`, naming the source."""
    specs = tf.nest.flatten(ds.element_spec)
    if not all(isinstance(s, tf.TensorSpec) and s.shape.rank is not None for s in specs):
        return ds.repeat()

    def fail(index):
        # Depends on `index`, so that it is checked when it runs, not traced.
        check = tf.debugging.Assert(tf.less(index, 0), [_empty_message("datasets", name)])
        with tf.control_dependencies([check]):
            return tf.nest.pack_sequence_as(ds.element_spec, [
                tf.zeros([d or 0 for d in s.shape], s.dtype) for s in specs
            ])

    return ds.repeat().concatenate(tf.data.Dataset.range(1).map(fail))


def empty_source_error(error):
    """The `ValueError` for an op error raised by `repeat_forever`, or None."""
    message = str(error).replace("\\'", "'")  # TensorFlow escapes quotes
    start = message.find(EMPTY_SOURCE)
    if start < 0:
        return None
    end = message.find("Leave it out of the dict.", start)
    return ValueError(message[start:end + len("Leave it out of the dict.")])


def batch_sources(sources, batch_size, argument="datasets"):
    """Each source batched with `batch_size`, refusing sources that look
    batched already (every component's leading dimension unknown, as
    `.batch()` leaves it): batching twice nests batches, and the error would
    come later, from a label shape."""
    batch_size = check_positive_int("batch_size", batch_size)
    for name, ds in sources.items():
        shapes = [s.shape for s in tf.nest.flatten(ds.element_spec) if hasattr(s, "shape")]
        if shapes and all(s.rank and s[0] is None for s in shapes):
            raise ValueError(
                f"Invalid value received for argument `batch_size`. `batch_size` "
                f"batches sources of single examples, and source {name!r} of "
                f"`{argument}` looks batched already (each of its tensors has an "
                f"unknown leading dimension: {ds.element_spec!r}). Pass batched "
                "sources without `batch_size`, or unbatched ones (`ds.unbatch()`). "
                f"Received: batch_size={batch_size}"
            )
    return {name: ds.batch(batch_size) for name, ds in sources.items()}


class Mixer:
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


def task_label_specs(model):
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
