"""CIFAR-10 on the CPU with CIFAR-shaped synthetic data and shrunken networks: every model x
head x training mode composes, trains and evaluates; TRADES and the augmentation behave."""

import urllib.error

import pytest
import torch
import torchvision
from omegaconf import OmegaConf

from blf import data
from blf.errors import ConfigError, DataError
from blf.nn import heads, models
from blf.nn.regularizers import Regularizer
from blf.train import objectives
from conftest import compose_config, option, train

CPU = torch.device("cpu")
TINY_NETS = {
    "resnet18": ["model.width=4", "model.blocks=[1,1,1,1]"],
    "wrn34_10": ["model.depth=10", "model.widen_factor=1"],
}
HEADS = ["identity", "tanh", "sigmoid", "blf", "lblf", "sine", "single_wave"]


def test_cifar_threat_model_and_recipes():
    cfg = compose_config(overrides=["dataset=cifar10", "model=resnet18", "training=pgd_at"])
    assert cfg.training.eps == pytest.approx(8 / 255) and cfg.training.nb_iter == 7
    assert cfg.training.eps_iter == pytest.approx(2 / 255)
    assert cfg.attack.pgd.nb_iter == 100 and cfg.attack.pgd.eps_iter == pytest.approx(2 / 255)
    assert [round(e * 255) for e in cfg.attack.pgd.eps] == list(range(0, 21, 2))
    assert (cfg.trainer.epochs, cfg.trainer.batch_size, cfg.optim.lr, cfg.optim.momentum) == (120, 128, 0.1, 0.9)
    assert cfg.optim.weight_decay == 5e-4 and list(cfg.scheduler.milestones) == [50, 100]
    assert list(compose_config(overrides=["dataset=cifar10", "model=wrn34_10", "training=trades"]).scheduler.milestones) == [75, 100]
    standard = compose_config(overrides=["dataset=cifar10", "model=resnet18"])
    assert standard.trainer.epochs == 350 and list(standard.scheduler.milestones) == [150, 250]
    trades = compose_config(overrides=["dataset=cifar10", "training=trades", "model=resnet18"]).training
    assert (trades.nb_iter, trades.eps_iter, trades.beta) == (10, pytest.approx(2 / 255), 6.0)
    mnist_trades = compose_config(overrides=["training=trades"]).training
    assert (mnist_trades.eps, mnist_trades.nb_iter, mnist_trades.eps_iter) == (0.3, 40, 0.01)


@pytest.mark.parametrize("model", sorted(TINY_NETS))
@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("mode", ["standard", "pgd_at", "trades"])
def test_every_cifar_configuration_trains_and_evaluates(tmp_path, model, head, mode):
    outcome = train(tmp_path, "dataset=cifar10", f"model={model}", f"head={head}", f"training={mode}", *TINY_NETS[model],
                    "dataset.synthetic_train=32", "dataset.synthetic_test=8", "trainer.batch_size=16", "trainer.epochs=1",
                    "eval.n=8", "eval.batch_size=8", "attack.pgd.nb_iter=1", "attack.pgd.eps=[0.0,0.03]",
                    "eval.integrity.enabled=false", *(["training.nb_iter=2"] if mode != "standard" else []))
    assert torch.isfinite(torch.tensor(outcome.progress.history[0]["train_loss"]))
    curve = [r for r in outcome.rows if r["kind"] == "robustness"]
    assert [r["eps"] for r in curve] == [0.0, 0.03] and all(r["augmented"] is True for r in curve)
    assert [r["logit_l2"] >= 0 for r in outcome.rows if r["kind"] == "norms"] == [True]


def test_networks_have_the_paper_shapes():
    def model(name, *overrides):
        return compose_config(overrides=["dataset=cifar10", f"model={name}", *overrides]).model

    rn18 = models.build(model("resnet18"), heads.Identity(), (3, 32, 32), 10).network
    assert sum(p.numel() for p in rn18.parameters()) == 11_173_962  # the usual CIFAR ResNet-18
    wrn = models.build(model("wrn34_10"), heads.Identity(), (3, 32, 32), 10).network
    assert sum(p.numel() for p in wrn.parameters()) == 46_160_474  # TRADES' WRN-34-10 (without its unused block)
    assert wrn.fc.in_features == 640 and len(wrn.blocks) == 15


def test_models_refuse_the_wrong_image_size():
    with pytest.raises(ConfigError, match="model=2c2f takes 28x28 images.*allowed models for it: resnet18, wrn34_10"):
        models.build(option("model", "2c2f"), heads.Identity(), (3, 32, 32), 10)
    with pytest.raises(ConfigError, match="model.depth=12"):
        models.build(compose_config(overrides=["model=wrn34_10", "model.depth=12"]).model, heads.Identity(), (3, 32, 32), 10)


def test_missing_cifar_says_what_to_do(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(DataError) as error:
        data.load(OmegaConf.create({"name": "cifar10", "root": str(tmp_path), "download": True, "synthetic": False,
                                    "n_train": None}))
    message = str(error.value)
    assert str(tmp_path) in message and "cifar-10-batches-py" in message and "dataset.synthetic=true" in message


def test_augmentation_crops_and_flips_on_tensors():
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).view(2, 3, 32, 32)
    same = data.Augmentation(4, True, CPU, seed=1)(x)
    again = data.Augmentation(4, True, CPU, seed=1)(x)
    assert same.shape == x.shape and torch.equal(same, again)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(2):  # each output is a 32x32 window of the padded image, possibly mirrored
        windows = [padded[i, :, dy:dy + 32, dx:dx + 32] for dy in range(9) for dx in range(9)]
        assert any(torch.equal(same[i], w) or torch.equal(same[i], w.flip(2)) for w in windows)
    outputs = {tuple(data.Augmentation(4, True, CPU, seed=s)(x)[0, 0, 10, :3].tolist()) for s in range(8)}
    assert len(outputs) > 1


class TestTrades:
    @pytest.fixture
    def setup(self):
        torch.manual_seed(0)
        head = heads.build(option("head", "blf", gamma=1.0))
        classifier = models.build(option("model", "2c2f"), head, (1, 28, 28), 10)
        x = torch.rand(8, 1, 28, 28)
        y = torch.randint(10, (8,))
        return classifier, x, y

    def test_inner_maximisation_increases_the_kl(self, setup):
        classifier, x, y = setup
        mode = objectives.TRADES(beta=6.0, eps=0.3, nb_iter=10, eps_iter=0.03)
        classifier.eval()
        with torch.no_grad():
            clean = torch.softmax(classifier(x), 1)
            torch.manual_seed(1)
            start = x + 0.001 * torch.randn_like(x)
            kl_start = objectives.kl_to_clean(classifier(start), clean)
        torch.manual_seed(1)
        x_adv = mode.adversarial(classifier, x, y)
        with torch.no_grad():
            assert objectives.kl_to_clean(classifier(x_adv), clean) > 10 * kl_start
        assert float((x_adv - x).abs().max()) <= 0.3 + 1e-6 and 0 <= float(x_adv.min()) and float(x_adv.max()) <= 1

    def test_beta_zero_is_the_clean_objective(self, setup):
        classifier, x, y = setup
        classifier.eval()  # no dropout, so the two forward passes agree
        loss, logits = objectives.TRADES(beta=0.0, eps=0.3, nb_iter=2, eps_iter=0.03).loss(classifier, x, y, Regularizer())
        assert torch.allclose(loss, torch.nn.functional.cross_entropy(classifier(x), y))
        positive, _ = objectives.TRADES(beta=6.0, eps=0.3, nb_iter=2, eps_iter=0.03).loss(classifier, x, y, Regularizer())
        assert positive > loss

    def test_beta_is_validated_and_recorded(self):
        with pytest.raises(ConfigError, match="training.beta"):
            objectives.TRADES(beta=-1, eps=0.3, nb_iter=1, eps_iter=0.01)
        assert objectives.TRADES(beta=9, eps=0.3, nb_iter=1, eps_iter=0.01).describe() == {"training": "trades", "beta": 9.0}


def test_real_cifar_files_become_uint8_tensors(tmp_path, monkeypatch):
    """The loader on files in CIFAR-10's own format (fake contents: the real set needs the internet)."""
    import pickle

    import numpy as np

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    batches = {name: rng.integers(0, 256, (4, 3072), dtype=np.uint8) for name in
               ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]}
    for name, pixels in batches.items():
        with open(folder / name, "wb") as handle:
            pickle.dump({"data": pixels, "labels": [1, 2, 3, 4]}, handle)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": [str(i) for i in range(10)]}, handle)
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args: True)  # fake files, fake MD5s
    dataset = data.load(OmegaConf.create({"name": "cifar10", "root": str(tmp_path), "download": False, "synthetic": False,
                                          "n_train": None}))
    assert dataset.train.images.shape == (20, 3, 32, 32) and dataset.train.images.dtype == torch.uint8
    assert dataset.test.labels.tolist() == [1, 2, 3, 4]
    # Row-major CIFAR layout: 1024 red values, then green, then blue.
    first = torch.from_numpy(batches["data_batch_1"][0].reshape(3, 32, 32))
    assert torch.equal(dataset.train.images[0], first)
