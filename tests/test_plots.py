"""Tests of `keras_mtl.plots`: a PNG from a fake History, and bad input."""

import sys

import numpy as np
import pytest

from keras_mtl import plots
from keras_mtl.tasks import Regression

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def fake_history(tasks=("age", "gender"), epochs=4):
    history = {"loss": list(np.linspace(3.0, 1.0, epochs)),
               "val_loss": list(np.linspace(3.5, 1.5, epochs))}
    for i, name in enumerate(tasks):
        history[f"{name}_loss"] = list((i + 1) * np.exp(-np.arange(epochs) / 3.0))
        history[f"val_{name}_loss"] = list((i + 1.2) * np.exp(-np.arange(epochs) / 4.0))
        history[f"{name}_mae"] = [0.5] * epochs
    return history


def _is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == PNG_SIGNATURE


def test_writes_png_from_history_dict(tmp_path):
    path = tmp_path / "sub" / "curves.png"
    returned = plots.plot_learning_curves(fake_history(), path)
    assert returned == str(path)
    assert _is_png(path)


def test_accepts_history_object_tasks_and_baselines(tmp_path):
    class History:  # what `fit` returns: the dict is in `.history`
        history = fake_history()

    baselines = {"age": {"loss": [1.1, 0.8, 0.6, 0.5], "val_loss": [1.2, 1.0, 0.9, 0.9]}}
    path = plots.plot_learning_curves(
        History(), tmp_path / "curves.png", tasks=[Regression("age"), "gender"],
        baselines=baselines,
    )
    assert _is_png(path)


def test_one_epoch_history(tmp_path):
    path = plots.plot_learning_curves({"a_loss": [1.0]}, tmp_path / "one.png")
    assert _is_png(path)


def test_task_names_read_from_history():
    assert plots._task_names_from(fake_history(("x", "y_z"))) == ["x", "y_z"]


def test_history_without_task_losses():
    with pytest.raises(ValueError, match="history_or_dict.*<task>_loss"):
        plots.plot_learning_curves({"loss": [1.0]}, "unused.png")


def test_unknown_task():
    with pytest.raises(ValueError, match=r"argument `tasks`.*\['nope'\]"):
        plots.plot_learning_curves(fake_history(), "unused.png", tasks=["age", "nope"])


def test_unknown_baseline():
    with pytest.raises(ValueError, match=r"argument `baselines`.*\['nope'\]"):
        plots.plot_learning_curves(
            fake_history(), "unused.png", baselines={"nope": {"loss": [1.0]}}
        )


def test_not_a_history():
    with pytest.raises(ValueError, match="argument `history_or_dict`"):
        plots.plot_learning_curves([1.0, 2.0], "unused.png")


def test_missing_matplotlib_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # as if not installed
    with pytest.raises(ImportError, match=r'keras_mtl.plots needs.*"keras_mtl\[examples\]"'):
        plots.plot_learning_curves(fake_history(), "unused.png")


# --- task weights and gradient conflict ------------------------------------------
class _Recorder:
    """Keeps the figures `savefig` writes, to check what they show."""

    def __init__(self, monkeypatch):
        from matplotlib.figure import Figure

        self.figures = []
        original = Figure.savefig

        def savefig(figure, *args, **kwargs):
            self.figures.append(figure)
            return original(figure, *args, **kwargs)

        monkeypatch.setattr(Figure, "savefig", savefig)


def _visible_axes(figure):
    # Colorbars are axes too; keep the panels that have a title or labels.
    return [ax for ax in figure.axes if ax.get_visible() and ax.get_xlabel()]


def test_task_weights_from_history(tmp_path, monkeypatch):
    recorder = _Recorder(monkeypatch)
    history = {"loss": [2.0, 1.0, 0.5], "weight_age": [1.0, 1.2, 1.4],
               "weight_gender_x": [1.0, 0.9, 0.7]}
    path = plots.plot_task_weights(history, tmp_path / "w.png")
    assert _is_png(path)
    (ax,) = _visible_axes(recorder.figures[0])
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("epoch", "task weight")
    assert [line.get_label() for line in ax.get_lines()] == ["age", "gender_x"]
    np.testing.assert_allclose(ax.get_lines()[1].get_ydata(), [1.0, 0.9, 0.7])
    np.testing.assert_allclose(ax.get_lines()[1].get_xdata(), [1, 2, 3])


def test_task_weights_far_apart_use_a_log_axis(tmp_path, monkeypatch):
    recorder = _Recorder(monkeypatch)
    plots.plot_task_weights({"weight_a": [0.5, 0.3], "weight_b": [5.0, 40.0]}, tmp_path / "w.png")
    plots.plot_task_weights({"weight_a": [0.5, 0.3], "weight_b": [0.0, 40.0]}, tmp_path / "z.png")
    (log_ax,), (zero_ax,) = (_visible_axes(f) for f in recorder.figures)
    assert (log_ax.get_yscale(), log_ax.get_ylabel()) == ("log", "task weight (log scale)")
    # A weight of 0 (a task left out of a step) has no place on a log axis.
    assert (zero_ax.get_yscale(), zero_ax.get_ylabel()) == ("linear", "task weight")


def test_task_weights_from_weight_history(tmp_path, monkeypatch):
    from keras_mtl.callbacks import WeightHistory

    recorder = _Recorder(monkeypatch)
    weights = WeightHistory()
    weights.history = {"a": [0.5, 0.6], "b": [1.5, 1.4]}
    weights.epochs = [3, 4]  # a resumed run: initial_epoch=3
    assert _is_png(plots.plot_task_weights(weights, tmp_path / "w.png", title="DWA"))
    figure = recorder.figures[0]
    (ax,) = _visible_axes(figure)
    np.testing.assert_allclose(ax.get_lines()[0].get_xdata(), [4, 5])
    assert figure.get_suptitle() == "DWA"


def test_task_weights_without_weights():
    with pytest.raises(ValueError, match=r"argument `weights`.*weight_<task>.*\['loss'\]"):
        plots.plot_task_weights({"loss": [1.0]}, "unused.png")
    with pytest.raises(ValueError, match="argument `weights`"):
        plots.plot_task_weights("not a history", "unused.png")
    with pytest.raises(ValueError, match="argument `title`"):
        plots.plot_task_weights({"weight_a": [1.0]}, "unused.png", title=3)


def _conflict_record(n_tasks=3, steps=(0, 5, 10)):
    rng = np.random.default_rng(0)
    matrices = []
    for _ in steps:
        m = rng.uniform(-1, 1, (n_tasks, n_tasks))
        m = (m + m.T) / 2
        np.fill_diagonal(m, 1.0)
        matrices.append(m)
    return {"task_names": [f"t{i}" for i in range(n_tasks)], "steps": list(steps),
            "matrices": matrices}


def test_gradient_conflict_heatmap_and_lines(tmp_path, monkeypatch):
    recorder = _Recorder(monkeypatch)
    record = _conflict_record()
    record["matrices"][1][0, 2] = record["matrices"][1][2, 0] = np.nan  # a zero gradient
    path = plots.plot_gradient_conflict(record, tmp_path / "c.png")
    assert _is_png(path)
    heat, lines = _visible_axes(recorder.figures[0])
    assert (heat.get_xlabel(), heat.get_ylabel()) == ("task", "task")
    assert [t.get_text() for t in heat.get_yticklabels()] == ["t0", "t1", "t2"]
    image = heat.get_images()[0].get_array()
    m = np.stack(record["matrices"])
    np.testing.assert_allclose(image[0, 1], m[:, 0, 1].mean())
    # NaN is left out of its cell's mean.
    np.testing.assert_allclose(image[0, 2], np.mean([m[0, 0, 2], m[2, 0, 2]]))
    cells = [t.get_text() for t in heat.texts]
    assert len(cells) == 9 and cells[0] == "1.00"
    assert (lines.get_xlabel(), lines.get_ylabel()) == ("training step", "cosine similarity")
    labels = [line.get_label() for line in lines.get_lines() if not line.get_label().startswith("_")]
    assert labels == ["t0 / t1", "t0 / t2", "t1 / t2"]


def test_gradient_conflict_from_callback_and_many_tasks(tmp_path, monkeypatch):
    from keras_mtl.callbacks import GradientConflict

    recorder = _Recorder(monkeypatch)
    record = _conflict_record(n_tasks=10, steps=range(0, 200, 10))
    conflict = GradientConflict((np.zeros((1, 4)), {"a": np.zeros((1, 1))}))
    conflict.task_names, conflict.steps, conflict.matrices = (
        record["task_names"], record["steps"], record["matrices"])
    assert _is_png(plots.plot_gradient_conflict(conflict, tmp_path / "c10.png"))
    # 45 pairs would be unreadable: one line per task, its mean cosine with
    # the 9 others.
    _, lines = _visible_axes(recorder.figures[0])
    drawn = [line for line in lines.get_lines() if not line.get_label().startswith("_")]
    assert [line.get_label() for line in drawn] == record["task_names"]
    m = np.stack(record["matrices"])
    np.testing.assert_allclose(drawn[3].get_ydata(), (m[:, 3, :].sum(axis=1) - 1) / 9)


@pytest.mark.parametrize(
    "record",
    [
        {"task_names": ["a"], "steps": [0], "matrices": [[[1.0]]]},
        {"task_names": ["a", "b"], "steps": [], "matrices": []},
        {"task_names": ["a", "b"], "steps": [0, 1], "matrices": [np.eye(2)]},
        {"task_names": ["a", "b"], "steps": [0], "matrices": [np.eye(3)]},
        "conflict",
    ],
)
def test_gradient_conflict_bad_record(record):
    with pytest.raises(ValueError, match="argument `conflict`"):
        plots.plot_gradient_conflict(record, "unused.png")


def test_gradient_conflict_before_fit():
    from keras_mtl.callbacks import GradientConflict

    conflict = GradientConflict((np.zeros((1, 4)), {"a": np.zeros((1, 1))}))
    with pytest.raises(ValueError, match="argument `conflict`.*has measured"):
        plots.plot_gradient_conflict(conflict, "unused.png")
