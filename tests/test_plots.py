"""plots: one save-and-close, shared curves."""
import matplotlib.pyplot as plt
from PIL import Image

from budgetnet import plots


def test_save_creates_the_folder_writes_a_png_and_frees_the_figure(tmp_path):
    fig, ax = plots.subplots(figsize=(2, 1))
    ax.plot([0, 1], [0, 1])
    out = plots.save(fig, tmp_path / "a" / "b.png", dpi=50)
    assert out == tmp_path / "a" / "b.png"
    assert Image.open(out).size == (100, 50)
    assert plt.get_fignums() == []


def test_plot_curves_draws_runs_their_mean_and_names_missing_metrics(tmp_path, monkeypatch):
    drawn = {}
    monkeypatch.setattr(plots, "save", lambda fig, path, dpi=plots.DPI: drawn.setdefault("fig", fig) and path)
    one = [{"epoch": 1, "train_loss": 2.0, "test_acc": 0.3}, {"epoch": 2, "train_loss": 1.0, "test_acc": 0.4}]
    two = [{"epoch": 1, "train_loss": 4.0, "test_acc": 0.5}, {"epoch": 2, "train_loss": 3.0, "test_acc": 0.6}]
    plots.plot_curves({"a": [one, two], "b": [one]}, ["train_loss", "test_acc", "val_loss"], tmp_path / "c.png",
                      "t", names={"train_loss": "cross-entropy + JSD"})
    loss, acc, val, spare = drawn["fig"].axes
    assert loss.get_ylabel() == "cross-entropy + JSD" and acc.get_ylabel() == "test accuracy (%)"
    lines = {line.get_label(): list(line.get_ydata()) for line in acc.get_lines()}
    assert lines["a (mean of 2)"] == [40.0, 50.0] and lines["b"] == [30.0, 40.0]  # accuracies in percent
    assert [t.get_text() for t in val.texts] == ["no validation loss recorded"]
    assert not spare.axison
    plots.plt.close(drawn["fig"])


def test_colours_are_distinct_per_label():
    palette = plots.colours([f"run{i}" for i in range(12)])
    assert len(set(palette.values())) == 12
