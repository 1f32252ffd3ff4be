"""Data loading: structure checks, clear errors for missing or damaged copies, splits, safe unpickling."""
import pickle
import shutil
import typing

import numpy as np
import pytest

from budgetnet.config import DataConfig, Dataset, RecipeError
from budgetnet.data.cifar import DATASETS, DataError, batch_indices, load_data, load_split
from budgetnet.design.spec import ModelSpec


def copy_of(fake_cifar, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(fake_cifar, root)
    return root, root / "cifar-10-batches-py"


def test_loads_a_reencoded_copy_and_says_so_once(fake_cifar, capsys, monkeypatch):
    monkeypatch.setattr("budgetnet.data.cifar._WARNED", set())  # other tests may have loaded this copy already
    x, y, classes = load_split("cifar10", "train", fake_cifar)
    assert x.shape == (50_000, 3, 32, 32) and x.dtype == np.uint8 and y.shape == (50_000,)
    assert classes[0] == "airplane" and len(classes) == 10
    load_split("cifar10", "test", fake_cifar)
    assert capsys.readouterr().err.count("differs from the official release") == 1


def test_splits_sizes_and_no_overlap(fake_cifar):
    data = load_data(DataConfig(train_size=1000, val_size=500, test_size=300), fake_cifar)
    assert len(data.train[0]) == 1000 and len(data.val[0]) == 500 and len(data.test[0]) == 300
    x, _, _ = load_split("cifar10", "train", fake_cifar)
    assert np.array_equal(data.val[0].numpy(), x[-500:]) and np.array_equal(data.train[0].numpy(), x[:1000])


def test_env_var_points_at_the_data(fake_cifar, monkeypatch):
    monkeypatch.setenv("BUDGETNET_DATA", str(fake_cifar))
    assert len(load_split("cifar10", "test")[0]) == 10_000


def test_missing_folder_says_where_to_put_the_data(tmp_path):
    with pytest.raises(DataError, match="no cifar-10-batches-py/ in .*--data"):
        load_split("cifar10", "train", tmp_path)


def test_missing_file(fake_cifar, tmp_path):
    root, folder = copy_of(fake_cifar, tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3 is missing"):
        load_split("cifar10", "train", root)


def test_truncated_file(fake_cifar, tmp_path):
    root, folder = copy_of(fake_cifar, tmp_path)
    blob = (folder / "test_batch").read_bytes()
    (folder / "test_batch").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="test_batch is truncated or corrupt"):
        load_split("cifar10", "test", root)


def test_wrong_shape_and_labels(fake_cifar, tmp_path):
    root, folder = copy_of(fake_cifar, tmp_path)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": np.zeros((10_000, 1024), np.uint8), "labels": [0] * 10_000}, f)
    with pytest.raises(DataError, match=r"shape \(N, 3072\)"):
        load_split("cifar10", "test", root)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": np.zeros((10_000, 3072), np.uint8), "labels": [12] * 10_000}, f)
    with pytest.raises(DataError, match="labels outside 0..9"):
        load_split("cifar10", "test", root)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": np.zeros((10, 3072), np.uint8), "labels": [1] * 10}, f)
    with pytest.raises(DataError, match="has 10 images, expected 10,000"):
        load_split("cifar10", "test", root)


class Exploit:
    def __reduce__(self):
        return (shutil.rmtree, ("/nonexistent-budgetnet-test",))


def test_a_data_file_cannot_run_code(fake_cifar, tmp_path):
    root, folder = copy_of(fake_cifar, tmp_path)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": Exploit(), "labels": []}, f)
    with pytest.raises(DataError, match="refusing to load shutil.rmtree"):
        load_split("cifar10", "test", root)


def test_the_recipes_datasets_are_the_loaders():
    assert typing.get_args(Dataset) == tuple(DATASETS)


def test_bad_data_sections_name_the_key():
    with pytest.raises(RecipeError, match="data.val_size=-1 must be between 0 and 49999"):
        DataConfig(val_size=-1).validate()
    with pytest.raises(RecipeError, match="data.train_size=49001 must be between 1 and 49000"):
        DataConfig(train_size=49_001, val_size=1000).validate()
    with pytest.raises(RecipeError, match="data.train_size=60000"):
        DataConfig(train_size=60_000).validate()
    with pytest.raises(RecipeError, match="data.test_size=0 must be between 1 and 10000"):
        DataConfig(test_size=0).validate()
    with pytest.raises(RecipeError, match="data.dataset='mnist' is unknown: use one of cifar10, cifar100"):
        DataConfig(dataset="mnist").validate()
    with pytest.raises(RecipeError, match="data.dataset=cifar100 has 100 classes but model.num_classes=10"):
        DataConfig(dataset="cifar100").validate(ModelSpec(num_classes=10))
    with pytest.raises(DataError, match="data.dataset='mnist' is unknown"):
        load_split("mnist", "test")  # a tool's own dataset name, not a recipe's


def test_batches_cover_the_epoch_and_shard_across_ranks():
    import torch
    g = lambda: torch.Generator().manual_seed(0)
    full = batch_indices(10, 4, "cpu", g())
    assert sorted(torch.cat(full).tolist()) == list(range(10)) and [len(b) for b in full] == [4, 4, 2]
    ranks = [batch_indices(10, 4, "cpu", g(), drop_last=True, rank=r, world_size=2) for r in (0, 1)]
    for b0, b1, b in zip(*ranks, batch_indices(10, 4, "cpu", g(), drop_last=True)):
        assert sorted(b0.tolist() + b1.tolist()) == sorted(b.tolist())


def test_a_meta_file_without_the_class_names_is_a_data_error(fake_cifar, tmp_path):
    root, folder = copy_of(fake_cifar, tmp_path)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"num_cases_per_batch": 10_000}, f)
    with pytest.raises(DataError, match="batches.meta: 'label_names' must list the 10 class names of cifar10"):
        load_split("cifar10", "test", root)
    c100 = tmp_path / "c100" / "cifar-100-python"  # the meta is read before the (here empty) image files
    c100.mkdir(parents=True)
    for name in ("train", "test"):
        (c100 / name).write_bytes(b"")
    with open(c100 / "meta", "wb") as f:
        pickle.dump({"coarse_label_names": ["a"] * 20}, f)
    with pytest.raises(DataError, match="meta: 'fine_label_names' must list the 100 class names of cifar100"):
        load_split("cifar100", "test", tmp_path / "c100")


@pytest.mark.parametrize("batch, message", [
    ([np.zeros((10_000, 3072), np.uint8), [0] * 10_000],
     r"test_batch holds a pickled list, not the dict of the python-format data set; replace the file$"),
    ({"data": np.zeros((10_000, 3072), np.uint8), "labels": ["cat"] * 10_000},
     r"test_batch: 'labels' must be integer labels, got string values \(e.g. 'cat' for image 0\)"),
    ({"data": np.zeros((10_000, 3072), np.uint8), "labels": [1.0] * 9_999 + [2.7]},
     r"test_batch: 'labels' must be integer labels, got fractional values \(e.g. 2.7 for image 9,999\)"),
    ({"data": np.zeros((10_000, 3072), np.uint8), "labels": 3},
     r"test_batch: 'labels' must hold one integer label per image \(10,000\), got int"),
])
def test_a_batch_that_is_not_the_python_format_is_named_in_one_line(fake_cifar, tmp_path, batch, message):
    root, folder = copy_of(fake_cifar, tmp_path)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batch, f)
    with pytest.raises(DataError, match=message) as error:
        load_split("cifar10", "test", root)
    assert str(folder / "test_batch") in str(error.value) and "\n" not in str(error.value)


def test_whole_labels_stored_as_floats_load_as_integers(fake_cifar, tmp_path):
    root, folder = copy_of(fake_cifar, tmp_path)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": np.zeros((10_000, 3072), np.uint8), "labels": np.arange(10_000) % 10 * 1.0}, f)
    _, y, _ = load_split("cifar10", "test", root)
    assert y.dtype == np.int64 and np.array_equal(y, np.arange(10_000) % 10)


def test_a_meta_file_that_is_not_a_dict_is_named(fake_cifar, tmp_path):
    root, folder = copy_of(fake_cifar, tmp_path)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(["airplane"] * 10, f)
    with pytest.raises(DataError, match="batches.meta holds a pickled list, not the dict"):
        load_split("cifar10", "test", root)
