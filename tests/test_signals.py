"""The two signals for gradients that exist and mislead (src/blf/audit/signals/): their per-example
tests on models whose gradients are right or wrong by construction, the module that disagrees
named, the families told apart, and an audit of a shattered defense that is not `reliable` about a
number its reference attack breaks, while its fixes close most of the gap."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import audit_zoo as Z
import broken_defenses as B
from blf.audit import audit
from blf.audit.subject import View
from blf.eval.signals import another_family, disagreeing_gradients
from blf.eval.signals.disagreeing_gradients import agreement, module_agreement

EPS = 0.1


def shattered_blocks() -> nn.Module:
    return nn.Sequential(B.Shattered(), Z.Blocks())


class MLP(nn.Module):
    """784 -> 32 -> 10, seeded, with the activation `act` on its hidden layer."""

    def __init__(self, act: nn.Module):
        super().__init__()
        torch.manual_seed(0)
        self.flat, self.fc1, self.act, self.fc2 = nn.Flatten(), nn.Linear(784, 32), act, nn.Linear(32, 10)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(self.flat(x))))


def test_the_gradient_of_a_smooth_model_agrees_with_its_secants_and_a_shattered_ones_does_not():
    x, y = Z.data(64)
    h = 0.25 * EPS
    plain = agreement(Z.Blocks(), Z.Blocks(), x, y, h, 8, seed=0)
    shattered = agreement(shattered_blocks(), shattered_blocks(), x, y, h, 8, seed=0)
    # Linear up to the margin's switch of the strongest wrong class: none below the 0.5 that fires.
    assert plain.median() > 0.99 and plain.min() > 0.5, plain
    assert (shattered < 0.5).float().mean() > 0.75, shattered  # 8 directions: a few agree by chance
    # A falling sawtooth points against its own trend: the cosine is negative, not merely small.
    sawtooth = MLP(B.Sawtooth(a=0.2, w=40.0))
    assert agreement(sawtooth, sawtooth, x, y, h, 8, seed=0).median() < 0


def test_the_module_whose_gradient_disagrees_is_named_and_only_it():
    x, _ = Z.data(32)
    found = module_agreement(View(shattered_blocks()), x, 0.25 * EPS, 8, seed=0)
    assert found["model.0"][0] < 0.5 and found["model.0"][1], found  # the transform, shaped like its input
    assert found["model.1"][0] > 0.99, found                          # the block means: linear
    found = module_agreement(View(MLP(B.Sawtooth(a=0.2, w=40.0))), x, 0.25 * EPS, 8, seed=0)
    low = {name for name, (cos, _) in found.items() if cos < 0.5}
    assert low == {"model.act"}, found


def test_only_the_other_family_counts_examples_no_gradient_attack_broke():
    broke = {"pgd": torch.tensor([1, 0, 0, 0], dtype=torch.bool),
             "apgd_ce": torch.tensor([0, 1, 0, 0], dtype=torch.bool),
             "square": torch.tensor([1, 1, 1, 0], dtype=torch.bool),
             "transfer_smooth": torch.tensor([0, 0, 0, 1], dtype=torch.bool)}
    assert another_family.only_other_family(broke, 4).tolist() == [False, False, True, True]
    assert not another_family.only_other_family({"pgd": broke["pgd"]}, 4).any()


@pytest.fixture(scope="module")
def shattered_audit():
    x, y = Z.data(200)
    model = shattered_blocks()
    # The reference: BPDA through the transform (the identity's backward), PGD-100 x 2 restarts.
    crafter = nn.Sequential(B.Straight(model[0]), model[1])
    torch.manual_seed(0)
    points = B.pgd(EPS, steps=100, restarts=2).restarted(model, crafter, x, y, y, EPS)
    truth = 100.0 * float(B.survival(model, points, y).mean())
    return model, x, y, truth


def test_a_shattered_defense_is_not_called_reliable_and_its_fixes_reach_the_reference(shattered_audit):
    model, x, y, truth = shattered_audit
    card = audit(model, x, y, [EPS], dataset="mnist", budget="standard", progress=False)
    result = card.at(EPS)
    assert card.reported_accuracy(EPS) - truth > 10, (card.reported_accuracy(EPS), truth)  # PGD is blind here
    assert 100.0 * result.fixes["disagreeing_gradients"].flagged / len(y) > 50
    assert any(a.startswith("bpda_0") for a in result.fixes["disagreeing_gradients"].attacks), result.fixes
    audited, _ = card.answers(result)
    assert card.accuracy(EPS) <= truth + 3.0 or audited.verdict != "reliable", (card.accuracy(EPS), truth, audited)
    assert card.accuracy(EPS) <= truth + 3.0, (card.accuracy(EPS), truth)


def test_without_the_new_fixes_the_shattered_defense_stays_overstated(shattered_audit, monkeypatch):
    """The guard above is the fix's doing: with the repairs of both new signals turned off, the
    audited number stays far above the reference."""
    model, x, y, truth = shattered_audit
    monkeypatch.setattr(disagreeing_gradients.DisagreeingGradients, "repair", lambda self, at, index, fix: None)
    monkeypatch.setattr(another_family.AnotherFamilyWins, "repair", lambda self, at, index, fix: None)
    card = audit(model, x, y, [EPS], dataset="mnist", budget="standard", progress=False)
    assert card.accuracy(EPS) > truth + 3.0, (card.accuracy(EPS), truth)
    audited, _ = card.answers(card.at(EPS))
    assert audited.verdict == "unreliable", audited  # the signals still fire, and say so


def test_a_studys_integrity_verdict_and_the_audits_signal_agree_on_the_same_outcomes():
    """gradient_free_vs_gradient (the studies' integrity check) and another_family_wins (the audit's
    signal) read one per-example test and one threshold (conf/signals.yaml): on the same outcomes
    they give the same share and the same verdict, on either side of the threshold."""
    from blf.audit.procedure import Ledger
    from blf.eval import integrity, signals
    from blf.eval.signals import Attempt

    cfg = signals.settings().another_family_wins
    n = 200
    for only_square in (0, 1, 2, 3, 6):  # 0, 0.5, 1, 1.5 and 3% of the examples
        g = torch.Generator().manual_seed(only_square)
        pgd = torch.rand(n, generator=g) < 0.6                     # True: survived
        apgd = pgd & (torch.rand(n, generator=g) < 0.95)
        square = apgd.clone()
        square[torch.nonzero(apgd).flatten()[:only_square]] = False  # broken by Square alone
        outcomes = [({"attack": "pgd", "eps": 0.1}, pgd), ({"attack": "apgd_ce", "eps": 0.1}, apgd),
                    ({"attack": "square", "eps": 0.1}, square)]
        verdict = integrity.gradient_free_vs_gradient(outcomes, cfg)

        everyone = torch.arange(n)
        ledger = Ledger(lambda points, y, index: points.flatten(1)[:, 0], torch.zeros(n, 1, 1, 1),
                        torch.zeros(n, dtype=torch.long), torch.ones(n))
        for (row, survived) in outcomes:  # the audit's ledger fed the same outcomes, attack by attack
            ledger.record(row["attack"], everyone, survived.float().view(n, 1, 1, 1))
        at = Attempt(None, 0.1, ledger, [], [], torch.zeros(n, 1, 1, 1), pgd)
        flags = another_family.AnotherFamilyWins(cfg).detect(at)
        share = 100.0 * float(flags.sum()) / n
        assert share == pytest.approx(verdict.value) == pytest.approx(100.0 * only_square / n)
        assert (share > cfg.max_share) == verdict.failed, (only_square, share, verdict)
