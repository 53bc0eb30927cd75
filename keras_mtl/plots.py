"""Diagnostic plots of multi-task training, written as PNG files.

`plot_learning_curves` draws one panel per task with the task's training and
validation loss per epoch, read from a Keras `History` (`age_loss`,
`val_age_loss`, ...), and optionally the same curves of single-task baselines
(dashed), so that negative transfer shows as a solid curve above its dashed
twin.

Plots use matplotlib's object-oriented API with the Agg renderer (a
`matplotlib.figure.Figure`, no `pyplot`): no window opens, and the backend of
the user's session (a notebook's, say) is left alone. matplotlib is an
optional dependency: `pip install "keras_mtl[examples]"`.
"""

import math
import os

# Solid: the multi-task model; dashed: single-task baselines. One colour per
# split, so the eye pairs MTL and STL curves of the same split.
_TRAIN_COLOUR = "tab:blue"
_VAL_COLOUR = "tab:orange"


def _matplotlib_figure():
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            "keras_mtl.plots needs matplotlib, which is an optional dependency. "
            'Install it with: pip install "keras_mtl[examples]"'
        ) from error
    return Figure


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
        if isinstance(values, (int, float)):
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

    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    figure.savefig(path, format="png", dpi=110)
    return path
