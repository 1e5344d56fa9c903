"""The audit on the zoo of broken defenses from the literature (tests/broken_defenses.py: trained
2C2F networks on MNIST behind each defense), against each one's reference attack and against
AutoAttack standard, on the first 200 test images at eps 0.1. Slow (about 25 minutes on a 2-core
CPU; benchmarks/broken_defenses.py writes the same numbers as the table in docs/evaluation.md):

- never `reliable` about a number its reference attack breaks by more than 3 points: either the
  audited number is within 3 points of the reference (or below it), or the verdict is `unreliable`
  and names what still fires;
- at or below AutoAttack standard's number on the same images (randomized: within the noise of
  64 draws per example);
- the undefended control is `reliable`.
"""

from __future__ import annotations

import pytest
import torch

import broken_defenses as B
from blf.audit import audit
from conftest import REPO

pytestmark = pytest.mark.slow
N, EPS, MARGIN = 200, 0.1, 3.0


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    members, x, y = B.zoo(tmp_path_factory.mktemp("zoo"), REPO / "data")
    return {m.name: m for m in members}, x[:N], y[:N]


@pytest.mark.parametrize("name", B.NAMES)
def test_the_audit_is_never_confidently_wrong_and_at_least_as_strong_as_autoattack(zoo, name):
    from blf.eval.attacks import AutoAttackStandard

    members, x, y = zoo
    member = members[name]
    card = audit(member.model, x, y, [EPS], dataset="mnist", budget="standard", progress=False)
    answer, _ = card.answers(card.at(EPS))
    reference = 100.0 * float(member.reference_attack(x, y, EPS).mean())
    audited = card.accuracy(EPS)
    if audited > reference + MARGIN:
        assert answer.verdict == "unreliable" and answer.reason, (name, audited, reference, answer)
    if name == "control":
        assert answer.verdict == "reliable", answer
    torch.manual_seed(0)
    points = AutoAttackStandard([EPS], "standard", seed=0).perturb(member.model, x, y, EPS)
    autoattack = 100.0 * float(B.survival(member.model, points, y, draws=64 if member.randomized else 1).mean())
    assert audited <= autoattack + (2.0 if member.randomized else 0.0), (name, audited, autoattack)
