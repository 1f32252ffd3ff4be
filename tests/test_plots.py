"""plots: one save, shared curves, no backend switched."""
import subprocess
import sys

import matplotlib.pyplot as plt
import pytest
from PIL import Image

from budgetnet import plots
from budgetnet.training.rundir import MetricRow


def test_save_creates_the_folder_writes_a_png_and_leaves_no_pyplot_figure(tmp_path):
    fig, ax = plots.subplots(figsize=(2, 1))
    ax.plot([0, 1], [0, 1])
    out = plots.save(fig, tmp_path / "a" / "b.png", dpi=50)
    assert out == tmp_path / "a" / "b.png"
    assert Image.open(out).size == (100, 50)
    assert plt.get_fignums() == []


def test_plot_curves_draws_runs_their_mean_and_names_missing_metrics(tmp_path, monkeypatch):
    drawn = {}
    monkeypatch.setattr(plots, "save", lambda fig, path, dpi=plots.DPI: drawn.setdefault("fig", fig) and path)
    one = [MetricRow.from_dict({"epoch": e, "train_loss": loss, "test_acc": acc}) for e, loss, acc in ((1, 2.0, 0.3),
                                                                                                     (2, 1.0, 0.4))]
    two = [MetricRow.from_dict({"epoch": e, "train_loss": loss, "test_acc": acc}) for e, loss, acc in ((1, 4.0, 0.5),
                                                                                                     (2, 3.0, 0.6))]
    plots.plot_curves({"a": [one, two], "b": [one]}, ["train_loss", "test_acc", "val_loss"], tmp_path / "c.png",
                      "t", names={"train_loss": "cross-entropy + JSD"})
    loss, acc, val, spare = drawn["fig"].axes
    assert loss.get_ylabel() == "cross-entropy + JSD" and acc.get_ylabel() == "test accuracy (%)"
    lines = {line.get_label(): list(line.get_ydata()) for line in acc.get_lines()}
    assert lines["a (mean of 2)"] == [40.0, 50.0] and lines["b"] == [30.0, 40.0]  # accuracies in percent
    assert [t.get_text() for t in val.texts] == ["no validation loss recorded"]
    assert not spare.axison


def test_the_curves_are_metric_row_fields_and_no_other_name_is_drawn(tmp_path):
    assert set(plots.CURVE_METRICS) <= set(MetricRow.keys())
    with pytest.raises(ValueError, match="no curve for test_accuracy"):
        plots.plot_curves({"a": [[]]}, ["test_accuracy"], tmp_path / "c.png", "t")


def test_colours_are_distinct_per_label():
    palette = plots.colours([f"run{i}" for i in range(12)])
    assert len(set(palette.values())) == 12


def test_importing_and_saving_leaves_the_backend_as_it_was(tmp_path):
    """A notebook's backend (here svg, chosen before budgetnet is imported) is not switched to Agg."""
    script = ("import matplotlib; matplotlib.use('svg'); from budgetnet import plots; "
              "fig, ax = plots.subplots(figsize=(2, 1)); ax.plot([0, 1]); "
              f"plots.save(fig, {str(tmp_path / 'x.png')!r}); print(matplotlib.get_backend())")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "svg" and (tmp_path / "x.png").is_file()
