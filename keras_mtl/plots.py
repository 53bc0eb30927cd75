"""Diagnostic plots of multi-task training, written as PNG files.

- `plot_learning_curves` draws one panel per task with the task's training
  and validation loss per epoch, read from a Keras `History` (`age_loss`,
  `val_age_loss`, ...), and optionally the same curves of single-task
  baselines (dashed), so that negative transfer shows as a solid curve above
  its dashed twin.
- `plot_task_weights` draws the weight a weighting method gave each task,
  epoch by epoch (`weight_<task>` in History, or a
  `keras_mtl.callbacks.WeightHistory`).
- `plot_gradient_conflict` draws what `keras_mtl.callbacks.GradientConflict`
  measured: a heatmap of the mean cosine similarity of task gradients at the
  shared representation, and each pair's cosine over training.

Plots use matplotlib's object-oriented API with the Agg renderer (a
`matplotlib.figure.Figure`, no `pyplot`): no window opens, and the backend of
the user's session (a notebook's, say) is left alone. matplotlib is an
optional dependency: `pip install "keras_mtl[examples]"`.
"""

import math
import numbers
import os

import numpy as np

from keras_mtl._optional import require

# Solid: the multi-task model; dashed: single-task baselines. One colour per
# split, so the eye pairs MTL and STL curves of the same split.
_TRAIN_COLOUR = "tab:blue"
_VAL_COLOUR = "tab:orange"
# Above this many task pairs (5 tasks), the conflict plot draws one line per
# task instead of one per pair.
_MAX_PAIR_LINES = 10
# Task weights spanning more than this factor are drawn on a log axis.
_LOG_SCALE_RATIO = 20.0


def _matplotlib_figure():
    return require("matplotlib.figure", "keras_mtl.plots").Figure


def _as_history_dict(argument, value):
    """`History` or dict of per-epoch lists -> dict of lists of floats."""
    history = getattr(value, "history", value)
    if not isinstance(history, dict):
        raise ValueError(
            f"Invalid value received for argument `{argument}`. Expected a "
            "`keras.callbacks.History` or a dict {key: [value per epoch]}. "
            f"Received: {argument}={value!r}"
        )
    curves = {}
    for key, values in history.items():
        if isinstance(values, numbers.Real):  # one epoch's value (NumPy's too)
            values = [values]
        try:
            curves[key] = [float(v) for v in values]
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"Invalid value received for argument `{argument}`. Expected "
                f"numbers per epoch for each key. Received: {key!r}: {values!r}"
            ) from error
    return curves


def _task_names_from(history):
    """Tasks in History order: keys `<task>_loss` other than `loss`."""
    names = []
    for key in history:
        if key.startswith("val_") or not key.endswith("_loss"):
            continue
        name = key[: -len("_loss")]
        if name and name not in names:
            names.append(name)
    return names


def _task_curves(history, task, single_task=False):
    """`(train, val)` loss lists of one task (either may be empty).

    A single-task model's own `loss` stands in when it has no `<task>_loss`.
    """
    train = history.get(f"{task}_loss")
    val = history.get(f"val_{task}_loss")
    if train is None and val is None and single_task:
        train, val = history.get("loss"), history.get("val_loss")
    return train or [], val or []


def plot_learning_curves(history_or_dict, path, tasks=None, baselines=None):
    """Plots per-task training and validation losses to a PNG file.

    One panel per task, with the loss on the vertical axis and the epoch
    (from 1) on the horizontal one: the multi-task model's training loss
    (blue) and validation loss (orange) as solid lines, and, for the tasks
    found in `baselines`, the single-task models' curves dashed in the same
    colours.

    Args:
        history_or_dict: The multi-task model's `keras.callbacks.History`
            (what `fit` returns) or its `.history` dict.
        path: Where to write the PNG. Missing parent folders are created.
        tasks: Task names (or `keras_mtl.tasks.Task` objects) to plot, in
            panel order. Defaults to every `<task>_loss` key of the history.
        baselines: Optional `{task: History or dict}` of single-task models,
            drawn dashed in the panel of their task.

    Returns:
        `path`, as a string.

    Example:

    >>> import os, tempfile
    >>> history = {"loss": [3.0, 2.2], "val_loss": [3.4, 2.9],
    ...            "age_loss": [2.0, 1.5], "val_age_loss": [2.2, 1.9],
    ...            "gender_loss": [1.0, 0.7], "val_gender_loss": [1.2, 1.0]}
    >>> path = plot_learning_curves(
    ...     history, os.path.join(tempfile.mkdtemp(), "curves.png"),
    ...     baselines={"age": {"loss": [1.9, 1.6], "val_loss": [2.1, 1.8]}})
    >>> os.path.getsize(path) > 0
    True
    """
    history = _as_history_dict("history_or_dict", history_or_dict)
    if tasks is None:
        names = _task_names_from(history)
    elif isinstance(tasks, (list, tuple)):
        names = [getattr(t, "name", t) for t in tasks]
    else:
        raise ValueError(
            "Invalid value received for argument `tasks`. Expected None or a "
            f"list of task names. Received: tasks={tasks!r}"
        )
    if not names:
        raise ValueError(
            "Invalid value received for argument `history_or_dict`. Expected "
            "per-task losses (`<task>_loss` keys, as `MultiTaskModel.fit` "
            f"records them). Received keys: {sorted(history)}"
        )
    absent = [n for n in names if not any(_task_curves(history, n))]
    if absent:
        raise ValueError(
            "Invalid value received for argument `tasks`. Expected tasks with "
            f"`<task>_loss` or `val_<task>_loss` in the history. Received "
            f"tasks without any: {absent}; history keys: {sorted(history)}"
        )
    baselines = {} if baselines is None else baselines
    if not isinstance(baselines, dict):
        raise ValueError(
            "Invalid value received for argument `baselines`. Expected None or "
            f"a dict {{task: History}}. Received: baselines={baselines!r}"
        )
    unknown = sorted(set(baselines) - set(names))
    if unknown:
        raise ValueError(
            "Invalid value received for argument `baselines`. Expected keys "
            f"among the plotted tasks {names}. Received unknown keys: {unknown}"
        )
    baselines = {
        name: _as_history_dict(f"baselines[{name!r}]", value)
        for name, value in baselines.items()
    }

    Figure = _matplotlib_figure()
    # Two columns for four panels (2 x 2 reads better than 3 + 1).
    columns = 2 if len(names) == 4 else min(len(names), 3)
    rows = math.ceil(len(names) / columns)
    figure = Figure(figsize=(4.4 * columns, 3.4 * rows + 0.6), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, name in zip(axes, names):
        curves = [("MTL", _task_curves(history, name), "-")]
        if name in baselines:
            curves.append(
                ("STL", _task_curves(baselines[name], name, single_task=True), "--")
            )
        epochs_seen = 1
        for label, (train, val), style in curves:
            for split, values, colour in (
                ("train", train, _TRAIN_COLOUR),
                ("val", val, _VAL_COLOUR),
            ):
                if not values:
                    continue
                epochs = range(1, len(values) + 1)
                ax.plot(
                    epochs, values, style, color=colour, marker="o",
                    markersize=3, label=f"{label} {split}",
                )
                epochs_seen = max(epochs_seen, len(values))
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.set_xlim(0.8, epochs_seen + 0.2)
        if epochs_seen <= 12:
            ax.set_xticks(range(1, epochs_seen + 1))
        else:
            ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    for ax in axes[len(names):]:
        ax.set_visible(False)
    title = "Per-task learning curves"
    if baselines:
        title += " (solid: multi-task model, dashed: single-task baselines)"
    figure.suptitle(title)
    return _save(figure, path)


def _save(figure, path):
    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    figure.savefig(path, format="png", dpi=110)
    return path


def _epoch_axis(ax, epochs):
    """Integer epoch ticks from 1, as in `plot_learning_curves`."""
    ax.set_xlabel("epoch")
    ax.set_xlim(min(epochs) - 0.2, max(epochs) + 0.2)
    if len(epochs) <= 12:
        ax.set_xticks(list(epochs))
    else:
        ax.xaxis.get_major_locator().set_params(integer=True)


def plot_task_weights(weights, path, title=None):
    """Plots each task's weight per epoch to a PNG file.

    One line per task, the epoch (from 1) on the horizontal axis and the
    weight the weighting method gave the task (the epoch's mean for methods
    that change it every step) on the vertical one, on a log scale when the
    positive weights span more than a factor of 20.

    Args:
        weights: A `keras_mtl.callbacks.WeightHistory`, or a
            `keras.callbacks.History` (or its `.history` dict) with
            `weight_<task>` keys, as `fit` records them when the model is
            compiled with `weighting=`.
        path: Where to write the PNG. Missing parent folders are created.
        title: Figure title; defaults to "Task weights per epoch".

    Returns:
        `path`, as a string.

    Example:

    >>> import os, tempfile
    >>> history = {"loss": [3.0, 2.2, 2.0],
    ...            "weight_age": [1.0, 1.3, 1.5], "weight_gender": [1.0, 0.8, 0.6]}
    >>> path = plot_task_weights(history, os.path.join(tempfile.mkdtemp(), "w.png"))
    >>> os.path.getsize(path) > 0
    True
    """
    if hasattr(weights, "epochs") and isinstance(getattr(weights, "history", None), dict):
        # A WeightHistory: {task: [weight per epoch]}, epochs 0-based.
        curves = _as_history_dict("weights", weights.history)
        epochs = [e + 1 for e in weights.epochs]
    else:
        history = _as_history_dict("weights", weights)
        curves = {
            key[len("weight_"):]: values
            for key, values in history.items()
            if key.startswith("weight_") and len(key) > len("weight_")
        }
        epochs = None
    curves = {name: values for name, values in curves.items() if values}
    if not curves:
        raise ValueError(
            "Invalid value received for argument `weights`. Expected a "
            "`WeightHistory` or a History with `weight_<task>` keys (a model "
            "compiled with `weighting=`). Received keys: "
            f"{sorted(getattr(weights, 'history', weights) or {})}"
        )
    if title is not None and not isinstance(title, str):
        raise ValueError(
            "Invalid value received for argument `title`. Expected None or a "
            f"string. Received: title={title!r}"
        )

    Figure = _matplotlib_figure()
    figure = Figure(figsize=(7.4, 4.2), layout="constrained")
    ax = figure.subplots()
    longest = max(len(v) for v in curves.values())
    for name, values in curves.items():
        x = epochs[: len(values)] if epochs else list(range(1, len(values) + 1))
        ax.plot(x, values, marker="o", markersize=3, label=name)
    _epoch_axis(ax, epochs if epochs else list(range(1, longest + 1)))
    values = [v for series in curves.values() for v in series]
    # Scale-invariant methods (Nash-MTL, IMTL, GradNorm) can give weights
    # orders of magnitude apart: a log axis keeps the small ones readable.
    if min(values) > 0 and max(values) / min(values) > _LOG_SCALE_RATIO:
        from matplotlib.ticker import ScalarFormatter

        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ScalarFormatter())  # 1, 10 (not 10^0, 10^1)
        ax.set_ylabel("task weight (log scale)")
    else:
        ax.set_ylabel("task weight")
    ax.grid(True, alpha=0.3)
    ax.legend(title="task", fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.suptitle(title or "Task weights per epoch")
    return _save(figure, path)


def _conflict_record(conflict):
    """`(task_names, steps, matrices)` from a `GradientConflict` or a dict."""
    if isinstance(conflict, dict):
        record = conflict
    else:
        record = {k: getattr(conflict, k, None) for k in ("task_names", "steps", "matrices")}
    names, steps, matrices = (record.get(k) for k in ("task_names", "steps", "matrices"))
    ok = (
        isinstance(names, (list, tuple)) and len(names) >= 2
        and isinstance(steps, (list, tuple)) and isinstance(matrices, (list, tuple))
        and len(steps) == len(matrices) >= 1
    )
    if ok:
        matrices = [np.asarray(m, dtype=float) for m in matrices]
        ok = all(m.shape == (len(names), len(names)) for m in matrices)
    if not ok:
        raise ValueError(
            "Invalid value received for argument `conflict`. Expected a "
            "`keras_mtl.callbacks.GradientConflict` that has measured (during "
            "`fit`), or a dict with `task_names` (2 or more), `steps` and one "
            "(T, T) matrix per step in `matrices`. Received: "
            f"{type(conflict).__name__} with task_names={names!r}, "
            f"{len(steps) if isinstance(steps, (list, tuple)) else steps!r} steps"
        )
    return list(names), [int(s) for s in steps], matrices


def plot_gradient_conflict(conflict, path, title=None):
    """Plots gradient cosine similarities between tasks to a PNG file.

    Left: a heatmap of the mean cosine similarity of every pair of task
    gradients at the shared representation, over all measurements, in
    [-1, 1] (red: conflicting, blue: aligned), each cell labelled with its
    value. Right: each pair's cosine against the training step (with more
    than 5 tasks, each task's mean cosine with the others), with the line at
    0 below which the tasks conflict.

    Args:
        conflict: A `keras_mtl.callbacks.GradientConflict` used in `fit`, or
            a dict `{"task_names": [...], "steps": [...], "matrices":
            [(T, T) array per step]}`.
        path: Where to write the PNG. Missing parent folders are created.
        title: Figure title; defaults to "Gradient cosine similarity at the
            shared representation".

    Returns:
        `path`, as a string.

    Example:

    >>> import os, tempfile
    >>> record = {"task_names": ["a", "b"], "steps": [0, 10],
    ...           "matrices": [[[1.0, 0.2], [0.2, 1.0]], [[1.0, -0.1], [-0.1, 1.0]]]}
    >>> path = plot_gradient_conflict(record, os.path.join(tempfile.mkdtemp(), "c.png"))
    >>> os.path.getsize(path) > 0
    True
    """
    names, steps, matrices = _conflict_record(conflict)
    if title is not None and not isinstance(title, str):
        raise ValueError(
            "Invalid value received for argument `title`. Expected None or a "
            f"string. Received: title={title!r}"
        )
    stack = np.stack(matrices)
    with np.errstate(invalid="ignore"):
        # NaN (a task with a zero gradient) is left out of its cell's mean.
        counts = np.sum(~np.isnan(stack), axis=0)
        mean = np.where(counts > 0, np.nansum(stack, axis=0) / np.maximum(counts, 1), np.nan)
    n = len(names)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]

    Figure = _matplotlib_figure()
    side = min(3.0 + 0.45 * n, 8.0)
    figure = Figure(figsize=(side + 7.8, max(side, 4.4)), layout="constrained")
    heat_ax, line_ax = figure.subplots(1, 2, width_ratios=[side, 6.0])

    image = heat_ax.imshow(mean, cmap="RdBu", vmin=-1.0, vmax=1.0)
    heat_ax.set_xticks(range(n), names, rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center")
    heat_ax.set_yticks(range(n), names)
    heat_ax.set_xlabel("task")
    heat_ax.set_ylabel("task")
    font = "medium" if n <= 6 else "x-small"
    for i in range(n):
        for j in range(n):
            value = mean[i, j]
            # `+ 0.0` turns a rounded -0.0 into 0.0 (no "-0.00" cells).
            text = "n/a" if np.isnan(value) else f"{round(value, 2) + 0.0:.2f}"
            colour = "white" if not np.isnan(value) and abs(value) > 0.6 else "black"
            heat_ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=font)
    heat_ax.set_title(
        f"mean over {len(steps)} measurement{'s' if len(steps) != 1 else ''} "
        f"(steps {steps[0]}-{steps[-1]})", fontsize="medium",
    )
    figure.colorbar(image, ax=heat_ax, shrink=0.8, label="cosine similarity")

    marker = "o" if len(steps) <= 30 else None
    if len(pairs) <= _MAX_PAIR_LINES:
        for i, j in pairs:
            line_ax.plot(steps, stack[:, i, j], marker=marker, markersize=3,
                         label=f"{names[i]} / {names[j]}")
        line_title = "each pair over training (below 0: conflicting)"
    else:
        # Dozens of pair lines are unreadable: one line per task instead,
        # its mean cosine with the other tasks.
        off_diagonal = ~np.eye(n, dtype=bool)
        for i, name in enumerate(names):
            with np.errstate(invalid="ignore"):
                values = np.nanmean(np.where(off_diagonal[i], stack[:, i, :], np.nan), axis=1)
            line_ax.plot(steps, values, marker=marker, markersize=3, label=name)
        line_title = "each task's mean cosine with the others (below 0: conflicting)"
    line_ax.axhline(0.0, color="black", linewidth=0.8)
    line_ax.set_ylim(-1.05, 1.05)
    line_ax.set_xlabel("training step")
    line_ax.xaxis.get_major_locator().set_params(integer=True)
    line_ax.set_ylabel("cosine similarity")
    line_ax.set_title(line_title, fontsize="medium")
    line_ax.grid(True, alpha=0.3)
    line_ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.suptitle(title or "Gradient cosine similarity at the shared representation")
    return _save(figure, path)
