"""checkpoint_every: checkpoints at an interval with exact resume; train_without_rundir writes nothing at all."""
import pytest
import torch

from budgetnet.config import RecipeError
from budgetnet.training import checkpoint, provenance
from budgetnet.training.loop import checkpoint_due, train, train_without_rundir
from budgetnet.training.rundir import RunFiles
from conftest import Crash, crash_after, tiny_recipe


def saved_epochs(monkeypatch) -> list[tuple[str, int]]:
    """(file name, epoch) of every checkpoint written from now on."""
    saved = []
    save = checkpoint.save

    def counting(state, path, *args, **kwargs):
        saved.append((path.name, state["epoch"]))
        return save(state, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save", counting)
    return saved


def test_a_run_killed_between_checkpoints_resumes_bit_identically_with_one_row_per_epoch(tiny_data, tmp_path,
                                                                                         monkeypatch):
    recipe = tiny_recipe("epochs=5", "checkpoint_every=2", "augment=[{name: crop, padding: 4}, {name: flip}]")
    saved = saved_epochs(monkeypatch)
    train(recipe, tmp_path / "full", data=tiny_data, progress=False)
    assert [epoch for name, epoch in saved if name == "last.pt"] == [2, 4, 5]  # every 2 epochs and the last
    assert {epoch for name, epoch in saved if name == "best.pt"} <= {2, 4, 5}  # best.pt on the same interval

    killed = RunFiles(tmp_path / "killed")
    with pytest.raises(Crash):
        train(recipe, killed.root, data=tiny_data, progress=False, on_epoch=crash_after(3))
    assert checkpoint.load(killed.last)["epoch"] == 2 and [r.epoch for r in killed.read_metrics()] == [1, 2, 3]
    summary = train(None, killed.root, data=tiny_data, progress=False, resume=True)  # redoes epoch 3, then 4 and 5
    assert summary.epochs_done == 5
    assert [r.epoch for r in killed.read_metrics()] == [1, 2, 3, 4, 5]  # epoch 3's first row was dropped
    full, resumed = checkpoint.load(tmp_path / "full" / "checkpoints" / "last.pt"), checkpoint.load(killed.last)
    for key, value in full["model"].items():
        assert torch.equal(value, resumed["model"][key]), key

    def untimed(root):
        return [{k: v for k, v in r.to_dict().items() if k not in ("seconds", "images_per_s")}
                for r in RunFiles(root).read_metrics()]

    assert untimed(killed.root) == untimed(tmp_path / "full")  # losses and accuracies of every epoch, bit for bit


def test_an_interrupt_names_the_last_checkpoint_written_not_the_last_epoch(tiny_data, tmp_path):
    def interrupt_after_3(row):
        if row.epoch == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt, match="last good checkpoint, after epoch 2"):
        train(tiny_recipe("epochs=4", "checkpoint_every=2"), tmp_path / "run", data=tiny_data, progress=False,
              on_epoch=interrupt_after_3)


def test_the_interval_by_default_every_epoch_up_to_50_then_50_checkpoints_a_run():
    def due(*overrides):
        return [e for e in range(1, int(overrides[0][7:]) + 1) if checkpoint_due(tiny_recipe(*overrides), e)]

    assert due("epochs=10") == list(range(1, 11))
    assert due("epochs=1200") == list(range(24, 1201, 24)) and len(due("epochs=1200")) == 50
    assert due("epochs=120") == list(range(3, 121, 3))
    assert due("epochs=10", "checkpoint_every=0") == [10]
    assert due("epochs=10", "checkpoint_every=4") == [4, 8, 10]


def test_a_negative_interval_is_one_clear_line_before_anything_is_written(tiny_data, tmp_path):
    with pytest.raises(RecipeError, match="checkpoint_every=-1 must be 0 or more"):
        train(tiny_recipe("checkpoint_every=-1"), tmp_path / "run", data=tiny_data, progress=False)
    assert not (tmp_path / "run").exists()


def test_training_without_a_run_directory_writes_nothing_and_runs_no_git(tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    saved = saved_epochs(monkeypatch)

    def no_git(*args, **kwargs):
        raise AssertionError(f"ran {args}")

    monkeypatch.setattr(provenance.subprocess, "run", no_git)
    provenance.git_commit.cache_clear()
    rows = []
    summary = train_without_rundir(tiny_recipe(), data=tiny_data, on_epoch=rows.append)
    assert saved == [] and list(tmp_path.iterdir()) == []
    assert summary.status == "finished" and summary.epochs_done == 2 and [r.epoch for r in rows] == [1, 2]
    assert summary.final_test_acc > 0.1 and summary.train_seconds == sum(r.seconds for r in rows)
    assert summary.budgetnet_commit is None and summary.device_name
    provenance.git_commit.cache_clear()


def test_resume_needs_a_run_directory(tiny_data):
    with pytest.raises(RecipeError, match="resume needs a run directory"):
        train(tiny_recipe(), None, data=tiny_data, progress=False, resume=True)


def test_a_run_killed_before_its_first_checkpoint_starts_again_with_one_row_per_epoch(tiny_data, tmp_path):
    recipe = tiny_recipe("epochs=4", "checkpoint_every=3")

    files = RunFiles(tmp_path / "run")
    with pytest.raises(Crash):
        train(recipe, files.root, data=tiny_data, progress=False, on_epoch=crash_after(2))
    assert not files.last.is_file() and [r.epoch for r in files.read_metrics()] == [1, 2]
    with pytest.raises(RecipeError, match="2 epoch rows"):  # a new run there would mix its rows with those
        train(recipe, files.root, data=tiny_data, progress=False)
    # no checkpoint was due yet: a resume (what `experiment` does for such a folder) trains from the start
    train(None, files.root, resume=True, data=tiny_data, progress=False)
    assert [r.epoch for r in files.read_metrics()] == [1, 2, 3, 4]
