"""The library API (`from blf import ...`): heads that describe themselves, any classifier under
a head, and `load` of a trained run that gives back the numbers its records hold."""

from __future__ import annotations

import re

import pytest
import torch
import torchvision

import blf
from blf import BLF, BoundedHead, LearnableBLF, load, with_head
from blf import data as datasets
from blf.errors import CheckpointError, ConfigError
from blf.run import storage
from conftest import REPO, train


def test_everything_in_all_imports_and_is_documented():
    for name in blf.__all__:
        assert getattr(blf, name).__doc__, name


def test_blf_keeps_gamma_in_its_state_dict_and_loads_it_back():
    head = BLF(gamma=1.5)
    assert float(head.state_dict()["gamma"]) == 1.5
    other = BLF(gamma=0.5)
    other.load_state_dict(head.state_dict())
    assert other.describe() == {"head": "blf", "gamma": 1.5}
    # A checkpoint written before gamma was a buffer lacks it: the configured gamma stands.
    other.load_state_dict({})
    assert other.scale() == 1.5


def test_gamma_keeps_the_configured_value_and_the_logits_dtype():
    head = BLF(gamma=0.1)
    assert head.describe()["gamma"] == 0.1  # not 0.10000000149 (float32)
    assert head(torch.randn(2, 10, dtype=torch.bfloat16)).dtype == torch.bfloat16


def test_theorem_3_extrema_bound_every_logit():
    head = BLF(gamma=2.0)
    assert 2.0 < head.z_star < 5**0.5 + 1
    assert head.logit_max == pytest.approx(2.0 * float(blf.blf(torch.tensor(head.z_star, dtype=torch.float64))))
    assert head.logit_min == -head.logit_max
    z = torch.linspace(-50, 50, 100001)
    logits = head(z)
    assert float(logits.max()) <= head.logit_max + 1e-6 and float(logits.min()) >= head.logit_min - 1e-6
    assert float(logits.max()) == pytest.approx(head.logit_max, abs=1e-4)  # attained, at z*
    learnable = LearnableBLF(gamma_tilde_init=0.0)
    assert learnable.logit_max == pytest.approx(learnable.scale() * head.logit_max / 2.0)


def test_any_bounded_function_can_be_a_head():
    head = BoundedHead(torch.tanh, gamma=3.0)
    z = torch.randn(4, 10)
    assert torch.allclose(head(z), 3.0 * torch.tanh(z))
    assert head.describe() == {"head": "tanh", "gamma": 3.0}


def test_with_head_puts_the_head_on_any_classifiers_logits():
    torch.manual_seed(0)
    network = torchvision.models.resnet18(num_classes=10).eval()
    model = with_head(network, BLF(gamma=1.0)).eval()
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(model(x), blf.blf(network(x)), atol=1e-6)
    # On a classifier of this package the head is replaced, the network shared.
    swapped = with_head(model, blf.Tanh(2.0))
    assert swapped.network is network and torch.allclose(swapped(x), 2.0 * torch.tanh(network(x)), atol=1e-6)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("library") / "run"
    # Settings under which the tiny model learns: an accuracy far from chance is a real check.
    outcome = train(run_dir, "head=blf", "head.gamma=1.5", "attack.pgd.eps=[0.0,0.1]", "optim.lr=0.05",
                    "optim.momentum=0.9", "dataset.synthetic_train=512", "trainer.epochs=15")
    return run_dir, outcome


def accuracy(model, split) -> float:
    images, labels = split.batch(slice(None))  # uint8 -> floats in [0, 1]
    with torch.no_grad():
        return 100.0 * float((model(images).argmax(1) == labels).float().mean())


def test_load_gives_back_the_recorded_clean_accuracy(trained):
    run_dir, outcome = trained
    model = load(run_dir)
    assert not model.training and model.config.head.gamma == 1.5 and model.head.scale() == 1.5
    clean = next(r for r in outcome.rows if r["kind"] == "robustness" and r["eps"] == 0.0)
    dataset = datasets.load(model.config.dataset)
    subset = dataset.test.take(dataset.test.subset_index(clean["n"], clean["eval_seed"]))
    assert clean["accuracy"] > 50
    assert accuracy(model, subset) == pytest.approx(clean["accuracy"])
    assert accuracy(model, dataset.test) == pytest.approx(clean["clean_test_acc"])
    assert model.checkpoint["clean_test_acc"] == pytest.approx(clean["clean_test_acc"])
    # The same from the checkpoint file, and the last checkpoint when asked.
    images, _ = subset.batch(slice(None))
    assert torch.equal(load(run_dir / "checkpoints" / "best.pt")(images), model(images))
    assert load(run_dir, checkpoint="last").checkpoint["epoch"] == outcome.progress.epoch


def test_load_refuses_what_is_not_a_trained_run(trained, tmp_path):
    run_dir, _ = trained
    with pytest.raises(CheckpointError, match="does not exist; allowed: a run folder"):
        load(tmp_path / "nothing")
    with pytest.raises(CheckpointError, match="has no checkpoints/best.pt"):
        load(tmp_path)
    broken = tmp_path / "broken.pt"
    broken.write_bytes((run_dir / "checkpoints" / "best.pt").read_bytes()[:500])
    with pytest.raises(CheckpointError, match="unreadable"):
        load(broken)
    with pytest.raises(ConfigError, match="checkpoint='middle' is not an option; allowed: best, last"):
        load(run_dir, checkpoint="middle")


def test_a_checkpoint_of_another_gamma_is_what_it_says(trained, tmp_path):
    """The state dict's gamma wins over a config that disagrees with it: the weights were trained
    under that gamma."""
    run_dir, _ = trained
    state = storage.load_checkpoint(run_dir / "checkpoints" / "best.pt")
    state["model"]["head.gamma"] = torch.tensor(0.5, dtype=torch.float64)
    storage.save_checkpoint(state, tmp_path / "edited.pt")
    assert load(tmp_path / "edited.pt").head.scale() == 0.5


def test_the_readme_snippet_runs(trained, tmp_path, monkeypatch):
    run_dir, _ = trained
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Use BLF in your own code"):]
    snippet = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    monkeypatch.chdir(tmp_path)
    scope = {}
    assert "multirun/demo/head:blf+seed:0" in snippet  # the folder make demo writes
    exec(compile(snippet.replace("multirun/demo/head:blf+seed:0", str(run_dir)), "README.md", "exec"), scope)
    assert isinstance(scope["model"], torch.nn.Module)
