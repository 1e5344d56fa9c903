"""Every option of every config group composes, builds, and takes a training step."""

import itertools

import pytest
import torch
from hydra.errors import MissingConfigException

from blf import assembly
from blf.errors import ConfigError
from blf.run import identity, storage
from conftest import CONF, compose_config, train

GROUPS = ["dataset", "model", "head", "regularizer", "training", "attack", "eval", "logger"]


def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_every_group_has_the_promised_options():
    assert set(options("model")) >= {"2c2f", "4c3f"}
    assert set(options("head")) >= {"identity", "tanh", "sigmoid", "blf", "lblf", "sine", "single_wave"}
    assert set(options("regularizer")) >= {"none", "logit_squeezing", "label_smoothing"}
    assert set(options("training")) >= {"standard", "pgd_at"}
    assert set(options("attack")) >= {"pgd"}
    assert set(options("logger")) >= {"wandb", "none"}


def test_recipe_follows_the_model_and_regime():
    cfg = compose_config(overrides=["model=2c2f"])
    assert (cfg.trainer.epochs, cfg.trainer.batch_size, cfg.optim.lr, cfg.optim.momentum) == (100, 64, 0.01, 0.5)
    assert cfg.optim.weight_decay == 0.01 and list(cfg.scheduler.milestones) == []
    cfg = compose_config(overrides=["model=4c3f", "training=pgd_at"])
    assert cfg.optim.weight_decay == 0.0 and list(cfg.scheduler.milestones) == [55, 75, 90]
    assert (cfg.training.eps, cfg.training.nb_iter, cfg.training.eps_iter) == (0.3, 40, 0.01)
    cfg = compose_config(overrides=["trainer.epochs=3"])
    assert cfg.trainer.epochs == 3


def test_mnist_attack_settings_come_from_the_dataset():
    cfg = compose_config()
    assert list(cfg.attack.keys()) == ["pgd"]
    assert list(cfg.attack.pgd.eps) == [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]
    assert (cfg.attack.pgd.nb_iter, cfg.attack.pgd.eps_iter) == (40, 0.01)


def test_unknown_group_option_lists_the_available_ones():
    with pytest.raises(MissingConfigException) as error:
        compose_config(overrides=["head=relu"])
    assert "head/relu" in str(error.value)


def one_epoch(tmp_path, overrides):
    """One epoch of the train app on 32 synthetic images: (first epoch's loss, whether it moved the weights)."""
    tiny = ["trainer.epochs=1", "dataset.synthetic_train=32", "dataset.synthetic_test=32", "trainer.batch_size=16",
            "attack.pgd.eps=[0.0]", "eval.integrity.enabled=false", "analysis=[]"]
    if "training=pgd_at" in overrides:
        tiny.append("training.nb_iter=2")
    outcome = train(tmp_path, *overrides, *tiny)
    initial = assembly.for_training(compose_config(overrides=[*overrides, *tiny, "dataset.synthetic=true"])).classifier
    trained = storage.load_checkpoint(tmp_path / "checkpoints" / "last.pt")["model"]
    changed = any(not torch.equal(v, trained[k]) for k, v in initial.state_dict().items())
    return outcome.progress.history[0]["train_loss"], changed


@pytest.mark.parametrize("model, head, regularizer, training", [
    *[("2c2f", h, "none", "standard") for h in ["identity", "tanh", "sigmoid", "blf", "lblf", "sine", "single_wave"]],
    *[(m, "blf", r, t) for m, r, t in itertools.product(["2c2f", "4c3f"], ["none", "logit_squeezing", "label_smoothing"],
                                                          ["standard", "pgd_at"])],
])
def test_every_combination_trains(tmp_path, model, head, regularizer, training):
    loss, changed = one_epoch(tmp_path, [f"model={model}", f"head={head}", f"regularizer={regularizer}", f"training={training}"])
    assert torch.isfinite(torch.tensor(loss)) and loss > 0
    assert changed


@pytest.mark.parametrize("override, key", [
    ("head.gamma=0", "head.gamma"),
    ("head.gamma=-1", "head.gamma"),
    ("regularizer.lam=-0.5", "regularizer.lam"),
    ("regularizer.alpha=1.0", "regularizer.alpha"),
    ("training.eps=-0.1", "training.eps"),
    ("attack.pgd.eps=[0.1,-0.1]", "attack.pgd.eps"),
])
def test_out_of_range_values_are_refused_by_name(override, key):
    group = override.split(".")[0]
    choice = {"head": "head=blf", "regularizer": "regularizer=logit_squeezing" if "lam" in override else "regularizer=label_smoothing",
              "training": "training=pgd_at", "attack": "attack=[pgd]"}[group]
    cfg = compose_config(overrides=[choice, override, "dataset.synthetic=true"])
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        assembly.for_training(cfg)


def test_run_names_come_from_the_model_defining_overrides():
    run_name = identity.run_name

    assert run_name([]) == "default"
    assert run_name(["seed=1", "head=blf", "head.gamma=1.5"]) == "head.gamma:1.5+head:blf+seed:1"
    # Evaluation, logging and placement do not name the folder: they do not change the model.
    assert run_name(["head=blf", "eval.n=100", "attack=[pgd,spsa]", "logger=none", "+experiment=demo", "device=cpu"]) == "head:blf"
    # How long a run trains does not name it: raising trainer.epochs continues the same folder.
    assert run_name(["head=blf", "trainer.epochs=7"]) == "head:blf"
    assert run_name(["trainer.threads=1", "dataset.root=/data", "paths.data_dir=/d", "study.title=x"]) == "default"
    assert run_name(["dataset.n_train=/tmp/x,y"]) == "dataset.n_train:_tmp_x_y"
    long = run_name([f"k{i}=v" * 10 for i in range(40)])
    assert len(long) <= 200 and long != run_name([f"k{i}=w" * 10 for i in range(40)])
