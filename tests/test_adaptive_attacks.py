"""Each adaptive attack breaks a toy model whose head saturates, where plain PGD does not.

The toy (conftest.toy): 10 pixels, one per class; pre-logit z_i = a (2 x_i - 1). A clean example has its own
pixel at 1 and the others at 0, so z_y = a and every other z_i = -a. Within eps = 0.55 an attack
can move x_y to 0.45 and one x_t to 0.55, which flips the prediction (z_t > z_y, and under BLF
g(z_t) > g(z_y)); a step the wrong way is clipped at the pixel range and changes nothing.
- BLF with a = 6 (beyond z* = 2.4): cross-entropy's gradient says raise z_y and lower the others
  (BLF decreases beyond z*), so plain PGD without random start never moves;
- identity head with a = 1000: softmax saturates in float32, cross-entropy's gradient is exactly
  zero, and plain PGD stands still too.
"""

import pytest
import torch

from blf.eval import attacks, robustness
from blf.eval.attacks.surrogate import StraightThrough, envelope, extremum, saturation_point
from blf.nn import heads, models
from blf.nn.heads import Z_STAR, blf
from conftest import CONF, attack_config, toy

CPU = torch.device("cpu")
EPS = 0.55
STEPS = {"nb_iter": 40, "eps_iter": 0.02, "rand_init": False, "restarts": 1}


def accuracy(name, classifier, split, **settings):
    cfg = attack_config(name, eps=[EPS], **{**STEPS, **settings})
    attack = attacks.build(name, cfg)
    if name == "transfer":
        attack.use_source(models.Classifier(classifier.network, heads.Identity()).eval(), "baseline")  # an unbounded twin
    _, outcomes = robustness.evaluate(classifier, split, [attack], seed=0, batch_size=30, device=CPU, num_classes=10,
                                      progress=False)
    (row, correct), = outcomes
    assert row["attack"] == name
    return row["accuracy"]


@pytest.fixture(scope="module")
def saturated_blf():
    classifier, split = toy(heads.BLF(1.0), 6.0)
    assert robustness.clean_accuracy(classifier, split, 30, CPU) == 100.0
    return classifier, split


@pytest.fixture(scope="module")
def saturated_softmax():
    classifier, split = toy(heads.Identity(), 1000.0)
    assert robustness.clean_accuracy(classifier, split, 30, CPU) == 100.0
    return classifier, split


def test_plain_pgd_is_fooled_by_both_toys(saturated_blf, saturated_softmax):
    assert accuracy("pgd", *saturated_blf) == 100.0
    assert accuracy("pgd", *saturated_softmax) == 100.0


@pytest.mark.parametrize("name,extra", [
    ("bpda_envelope", {}), ("bpda_tanh", {}), ("bpda_identity", {}), ("pgd_cw_prelogits", {}),
    ("pgd_dlr_prelogits", {}), ("prelogit_targeted", {"n_target_classes": 2}), ("transfer", {}),
])
def test_each_adaptive_attack_breaks_the_saturated_blf_head(saturated_blf, name, extra):
    assert accuracy(name, *saturated_blf, **extra) == 0.0


@pytest.mark.parametrize("name", ["pgd_cw", "pgd_dlr"])
def test_margin_losses_break_a_saturated_softmax(saturated_softmax, name):
    assert accuracy(name, *saturated_softmax) == 0.0


def test_margins_on_blf_logits_inherit_its_masking(saturated_blf):
    """DLR is invariant to scaling the logits, not to a head that turns: on BLF's logits it is
    fooled like PGD; on the pre-logits it is not (the test above)."""
    assert accuracy("pgd_dlr", *saturated_blf) == 100.0


def test_for_the_identity_head_bpda_is_plain_pgd():
    torch.manual_seed(0)
    classifier, split = toy(heads.Identity(), 1.5)
    x, y = split.batch(slice(None))
    for surrogate in ("identity", "tanh", "envelope"):
        twin = classifier.with_head(StraightThrough(classifier.head, surrogate))
        assert torch.equal(twin(x), classifier(x))
        plain = attacks.build("pgd", attack_config("pgd", eps=[0.3], **STEPS)).perturb(classifier, x, y, 0.3)
        bpda = attacks.build(f"bpda_{surrogate}", attack_config(f"bpda_{surrogate}", eps=[0.3], **STEPS))
        assert torch.equal(bpda.perturb(classifier, x, y, 0.3), plain)


def test_straight_through_keeps_the_real_logits_and_takes_the_surrogates_gradient():
    head = heads.BLF(2.0)
    z = torch.tensor([[4.0, -5.0, 0.5]], requires_grad=True)
    bpda = StraightThrough(head, "envelope")
    out = bpda(z)
    assert torch.allclose(out, head(z))
    (grad,) = torch.autograd.grad(out.sum(), z)
    assert (grad > 0).all()  # BLF's own gradient is negative at 4 and -5 (beyond z*)
    (own,) = torch.autograd.grad(head(z).sum(), z)
    assert own[0, 0] < 0 and own[0, 1] < 0


def test_envelope_is_blf_up_to_z_star_and_increasing_beyond():
    assert extremum(blf) == pytest.approx(Z_STAR, abs=1e-3)
    assert saturation_point(torch.tanh) == pytest.approx(2.993, abs=1e-2)
    z = torch.linspace(-30, 30, 60001, dtype=torch.float64)
    e = envelope(blf, z)
    inside = z.abs() <= Z_STAR - 1e-3
    assert torch.allclose(e[inside], blf(z[inside]))
    assert (torch.diff(e) > 0).all()


def test_records_name_the_surrogate_loss_and_source():
    bpda = attacks.build("bpda_tanh", attack_config("bpda_tanh"))
    margin = attacks.build("pgd_dlr_prelogits", attack_config("pgd_dlr_prelogits"))
    assert bpda.name == "bpda_tanh" and bpda.settings()["surrogate"] == "tanh"
    assert margin.settings()["loss"] == "dlr" and margin.settings()["outputs"] == "prelogits"
    assert attacks.build("transfer", attack_config("transfer")).settings()["source"] is None  # none handed yet


def test_the_adaptive_set_composes_and_eval_adaptive_false_leaves_it_out():
    from blf import assembly  # noqa: F401 - the settings the apps read
    from conftest import compose_config

    cfg = compose_config(overrides=["attack=[pgd,adaptive]"])
    names = [a.name for a in attacks.build_all(cfg.attack)]
    assert names[0] == "pgd" and {"bpda_envelope", "pgd_dlr_prelogits", "prelogit_targeted", "transfer"} <= set(names)
    assert [a.name for a in attacks.build_all(cfg.attack, adaptive=False)] == ["pgd"]
    # The set's grid attacks cover the eps grid; the others run at the table eps.
    by_name = {a.name: a for a in attacks.build_all(cfg.attack)}
    assert by_name["bpda_envelope"].eps == by_name["pgd"].eps
    assert by_name["bpda_tanh"].eps == [cfg.dataset.threat.table_eps]


def test_a_run_evaluated_with_the_adaptive_set_records_every_attack_and_the_checks(tmp_path):
    """The set through the app: grid attacks over the PGD grid, the others at the table eps, transfer
    from the Baseline beside the run (its folder named in the records), the new checks recorded."""
    from conftest import evaluate, train

    train(tmp_path / "seed:0")  # the study's Baseline
    train(tmp_path / "blf", "head=blf", "head.gamma=0.5")
    small = [f"attack.{a}.nb_iter=2" for a in ("pgd", "bpda_envelope", "pgd_dlr_prelogits", "bpda_tanh", "bpda_identity",
                                              "pgd_cw", "pgd_dlr", "prelogit_targeted", "transfer")]
    evaluate(tmp_path / "blf", "attack=[pgd,adaptive]", "attack.pgd.eps=[0.0,0.1,0.3]", *small, "logger=none",
             "progress=false", "eval.n=32", "eval.integrity.unbounded.nb_iter=5", "eval.integrity.gradient_free.n_queries=10",
             "eval.integrity.convergence.iter_factor=2", "eval.integrity.convergence.restarts=2", "analysis=[]")
    from blf.run import storage

    rows = storage.read_jsonl(tmp_path / "blf" / "results.jsonl")
    ran = {(r["attack"], r["eps"]) for r in rows if r["kind"] == "robustness"}
    assert {("bpda_envelope", 0.3), ("pgd_dlr_prelogits", 0.1), ("bpda_tanh", 0.15), ("transfer", 0.15),
            ("prelogit_targeted", 0.15)} <= ran
    assert ("bpda_tanh", 0.3) not in ran
    transfer = next(r for r in rows if r.get("attack") == "transfer")
    assert transfer["attack.source"] == "seed:0"
    worst = next(r for r in rows if r["kind"] == "worst_case" and r["eps"] == 0.15)
    assert {"pgd", "transfer", "bpda_tanh"} <= set(worst["attacks"].split("+"))
    checks = {r["check"] for r in rows if r["kind"] == "integrity"}
    assert {"saturation", "attack_gap", "input_gradients", "pgd_convergence", "gradient_free_vs_gradient"} <= checks
    # Without the set, the same command runs the paper's attack alone.
    evaluate(tmp_path / "seed:0", "attack=[pgd,adaptive]", "eval.adaptive=false", "logger=none", "progress=false",
             "eval.n=32", "attack.pgd.nb_iter=2", "analysis=[]", "eval.integrity.enabled=false")
    assert {r["attack"] for r in storage.read_jsonl(tmp_path / "seed:0" / "results.jsonl") if r["kind"] == "robustness"} == {"pgd"}


def test_transfer_finds_the_baseline_beside_the_run_another_seed_first(tmp_path):
    import json

    from blf.sources import find_baseline

    def run(name, **identity):
        folder = tmp_path / name
        (folder / "checkpoints").mkdir(parents=True)
        (folder / "checkpoints" / "best.pt").write_bytes(b"")
        row = {"dataset": "mnist", "model": "2c2f", "training": "standard", "head": "identity", "regularizer": "none",
               "seed": 0, **identity}
        (folder / "results.jsonl").write_text(json.dumps(row) + "\n")
        return folder, row

    blf_run, blf_identity = run("blf", head="blf")
    run("lsq", regularizer="logit_squeezing")
    run("at", training="pgd_at")
    seed0, seed0_identity = run("seed:0")
    assert find_baseline(blf_run, blf_identity) == seed0
    assert find_baseline(seed0, seed0_identity) == seed0  # alone: its own source (plain PGD)
    seed1, _ = run("seed:1", seed=1)
    assert find_baseline(blf_run, blf_identity) == seed1  # independent of the run's seed
    assert find_baseline(seed0, seed0_identity) == seed1
    assert find_baseline(blf_run, {**blf_identity, "model": "4c3f"}) is None
    # A Baseline trained without evaluation has no records: its checkpoint's config says what it is.
    from blf.run import storage

    (seed1 / "results.jsonl").unlink()
    assert find_baseline(blf_run, blf_identity) == seed0  # an unreadable checkpoint is no source
    config = {"dataset": {"name": "mnist"}, "model": {"name": "2c2f"}, "training": {"name": "standard"},
              "head": {"name": "identity"}, "regularizer": {"name": "none"}, "seed": 1}
    storage.save_checkpoint({"model": {}, "config": config}, seed1 / "checkpoints" / "best.pt")
    assert find_baseline(blf_run, blf_identity) == seed1


def test_a_run_trained_before_the_adaptive_budgets_existed_is_evaluated_and_resumed(tmp_path):
    """Checkpoints whose config predates `dataset.threat.adaptive` get it from the dataset option
    now; and evaluation budgets are not identity, so a changed one does not refuse the resume."""
    from blf.run import storage
    from conftest import evaluate, train

    run = tmp_path / "old"
    train(run)
    for which in ("best", "last"):
        path = run / "checkpoints" / f"{which}.pt"
        state = storage.load_checkpoint(path)
        del state["config"]["dataset"]["threat"]["adaptive"]
        state["config"]["dataset"]["threat"]["unbounded_eps"] = 1.0  # the old default
        storage.save_checkpoint(state, path)
    evaluate(run, "attack=[bpda_envelope]", "attack.bpda_envelope.eps=[0.1]", "logger=none", "progress=false",
             "eval.n=16", "eval.integrity.enabled=false", "analysis=[]")
    rows = storage.read_jsonl(run / "results.jsonl")
    assert any(r.get("attack") == "bpda_envelope" and r["attack.nb_iter"] == 40 for r in rows)
    train(run, "trainer.epochs=3")  # resumes (a different run would be refused)
    assert len(storage.read_jsonl(run / "metrics.jsonl")) == 3


# Every option of conf/attack but the set (adaptive.yaml names others) and transfer (it needs a
# Baseline run beside the model; its PGD is pgd's).
BF16_OPTIONS = sorted({p.stem for p in (CONF / "attack").glob("*.yaml")} - {"adaptive", "transfer"})
CHEAP = {"square": {"n_queries": 20}, "apgd_ce": {"n_iter": 3, "n_restarts": 1},
         "apgd_t": {"n_iter": 3, "n_restarts": 1, "n_target_classes": 1}, "spsa": {"nb_iter": 1, "nb_sample": 8},
         "autoattack": {"version": "standard"}}


def small_autoattack(monkeypatch):
    """pyautoattack's AutoAttack with every sub-attack cut to a few iterations or queries: the
    real ensemble and its code paths, at a cost a test can pay."""
    import pyautoattack

    class Small(pyautoattack.AutoAttack):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            for attack in (self.apgd, self.apgd_targeted, self.fab):
                attack.n_iter = 2
            self.apgd_targeted.n_target_classes = self.fab.n_target_classes = 1
            self.square.n_queries = 10
            self.apgd.eot_iter = self.apgd_targeted.eot_iter = min(self.apgd.eot_iter, 2)

    monkeypatch.setattr(pyautoattack, "AutoAttack", Small)


@pytest.mark.parametrize("name", BF16_OPTIONS)
def test_attacks_run_under_bf16_autocast(name, monkeypatch):
    """pyautoattack keeps float32 buffers beside the model's output: under bf16 autocast Square's
    index puts failed (BFloat16 vs Float) once 32 or more points were attacked. A tiny CIFAR-10
    ResNet-18 and 64 points, labelled by the model's own clean predictions and attacked at a
    budget too small to break them: every point reaches every attack of an ensemble."""
    from blf.nn import precision
    from conftest import option

    small_autoattack(monkeypatch)
    torch.manual_seed(0)
    classifier = models.build(option("model", "resnet18", width=4, blocks=[1, 1, 1, 1]), heads.BLF(1.0), (3, 32, 32),
                              10).eval()
    x = torch.rand(64, 3, 32, 32)
    eps = 1e-4
    settings = CHEAP.get(name, {"nb_iter": 3})
    attack = attacks.build(name, attack_config(name, eps=[eps], **settings))
    with precision.autocast(CPU, "bf16"):
        with torch.no_grad():
            y = classifier(x).argmax(1)
        x_adv = attack.perturb(classifier, x, y, eps)
    assert x_adv.dtype == torch.float32 and x_adv.shape == x.shape and (x_adv - x).abs().max() <= eps + 1e-6


def test_transfer_sources_are_found_by_the_caller_and_refused_in_one_line(tmp_path, caplog):
    """The attack crafts only on a model handed to it; blf.sources finds the folder: `auto` without
    a Baseline leaves the attack out with a warning, a named folder without the checkpoint is refused."""
    from blf import sources
    from blf.config import ConfigError

    x, y = torch.rand(2, 1, 1, 10), torch.tensor([0, 1])
    transfer = attacks.build("transfer", attack_config("transfer", eps=[0.1]))
    with pytest.raises(ConfigError, match="has no source model; allowed: hand it one"):
        transfer.perturb(toy(heads.Identity(), 1.0)[0], x, y, 0.1)
    (tmp_path / "blf").mkdir()
    assert sources.locate(transfer, tmp_path / "blf", {"dataset": "mnist"}) is None
    assert "no Baseline" in caplog.text
    named = attacks.build("transfer", attack_config("transfer", source=str(tmp_path / "blf"), checkpoint="last"))
    with pytest.raises(ConfigError, match=r"attack.transfer.source='.*blf' has no checkpoints/last.pt; allowed: auto"):
        sources.locate(named, tmp_path / "blf", {})
