"""blf.audit: the zoo of known-broken defenses (each flagged by its indicator, audited within a
stated margin of its true robust accuracy), the answers, the card, and the command on every
kind of TARGET with its refusals."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

import audit_zoo as Z
from blf.audit import Audit, audit
from blf.audit import __main__ as command
from blf.errors import ConfigError
from blf.nn.heads import blf as g
from conftest import train

N = 200  # examples per zoo audit: a share of 1% is two examples


def zoo(name: str):
    """(model, x, y, eps, true robust accuracy in %) of a zoo member."""
    if name == "trap":
        x, y = Z.data(N, **Z.TRAP_DATA)
        return Z.trap(), x, y, 0.15, Z.truth_trap(x, y, 0.15)
    if name == "incomplete":  # PGD-40 with steps of 0.01 (the paper's MNIST PGD) walks 0.4: not to 0.45
        x, y = Z.data(N, own=(0.85, 0.95), other=(0.05, 0.15), spread=0.03)
        return Z.baseline(), x, y, 0.45, Z.truth_monotone(x, y, 0.45)
    x, y = Z.data(N)
    eps = 0.1
    if name == "baseline":
        return Z.baseline(), x, y, eps, Z.truth_monotone(x, y, eps)
    if name == "saturated":
        return Z.saturated(), x, y, eps, Z.truth_monotone(x, y, eps)
    if name == "blf":
        return Z.blf_beyond_z_star(), x, y, eps, Z.truth_bounded(x, y, eps, g)
    if name == "quantized":
        return Z.quantized(16), x, y, eps, Z.truth_monotone(x, y, eps, quantize=Z.Quantize(16))
    if name == "noisy":
        return Z.noisy(0.5), x, y, eps, Z.truth_noisy(x, y, eps, 0.5)
    raise KeyError(name)


# zoo member: (the indicator that must fire on the reported attack, margin in points around the truth)
CASES = {
    "saturated": ("unavailable_gradients", 2.0),   # logits x 1000: cross-entropy's gradient is exactly zero
    "blf": ("unavailable_gradients", 2.0),         # BLF with pre-logits past z*: reversed gradients
    "quantized": ("unavailable_gradients", 2.0),   # rounding passes no gradient; BPDA crosses it
    "noisy": ("unstable_predictions", 3.0),        # noise at every forward pass; EOT, expectations
    "trap": ("silent_success", 2.0),               # a wrong class wins midway; the last iterate loses it
    "incomplete": ("incomplete_optimization", 2.0),  # PGD-40's steps cannot reach the budget's edge
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_broken_defense_is_flagged_by_its_indicator_and_audited_near_its_truth(name):
    indicator, margin = CASES[name]
    model, x, y, eps, truth = zoo(name)
    card = audit(model, x, y, [eps], dataset="mnist", budget="quick", progress=False)
    result = card.at(eps)
    share = 100.0 * result.fixes[indicator].flagged / N
    assert share > card.cfg.signals[indicator].max_share, (name, indicator, share)
    fix = result.fixes[indicator]
    assert fix.attacks, f"{name}: the fix for {indicator} did not run"
    if name != "noisy":  # the fix itself broke examples (EOT on this linear toy only sharpens the expectation)
        assert fix.after < fix.before, (name, fix)
    assert abs(card.accuracy(eps) - truth) <= margin, (name, card.accuracy(eps), truth, card.reported_accuracy(eps))
    if name != "noisy":  # the others' reported PGD misses what the audit finds
        assert card.reported_accuracy(eps) - truth > margin, (name, card.reported_accuracy(eps), truth)
        _, answer = card.answers(result)
        assert answer.verdict.startswith("overstated"), answer
        assert "flagged on the reported attack: " + {
            "unavailable_gradients": "unavailable gradients", "silent_success": "silent success",
            "incomplete_optimization": "incomplete optimization", "unstable_predictions": "unstable predictions"}[indicator] \
            in answer.reason, answer.reason


def test_a_plain_baseline_raises_no_masking_indicator_and_its_audit_is_reliable():
    model, _, _, eps, _ = zoo("baseline")
    x, y = Z.data(400)
    truth = Z.truth_monotone(x, y, eps)
    card = audit(model, x, y, [eps], dataset="mnist", budget="standard", progress=False)
    result = card.at(eps)
    for masking in ("unavailable_gradients", "unstable_predictions", "transfer_failure"):
        assert result.fixes[masking].flagged == 0, (masking, result.fixes[masking])
    assert card.accuracy(eps) == pytest.approx(truth, abs=1.0)
    audited, reported = card.answers(result)
    assert audited.verdict == "reliable", audited
    assert reported.verdict == "matches", reported
    assert card.passed()


def test_a_randomized_model_is_audited_as_an_expectation():
    model, x, y, eps, truth = zoo("noisy")
    card = audit(model, x, y, [eps], budget="quick", progress=False)
    assert any("randomized" in note for note in card.notes)
    audited = card.at(eps).audited
    assert ((audited > 0) & (audited < 1)).any()  # shares of draws, not 0/1 outcomes
    assert "t over" in card.eps_dict(card.at(eps))["audited"]["method"]


def test_the_card_as_markdown_json_and_figure():
    model, x, y, eps, _ = zoo("saturated")
    card = audit(model, x[:60], y[:60], [0.0, eps], budget="quick", progress=False, name="logits x 1000")
    text = card.to_markdown()
    assert "# Audit of logits x 1000" in text and "unavailable gradients" in text and "| 0.1 |" in text
    assert "**inconclusive**" in text  # 60 examples, the quick budget
    data = json.loads(card.to_json())
    (entry,) = [e for e in data["eps"] if e["eps"] == eps]
    assert entry["indicators"]["unavailable_gradients"]["flagged"] == 60
    assert len(entry["audited"]["outcome"]) == 16  # 60 examples as hex bits
    assert data["subject"]["prelogits"] is False
    figure = card.figure()
    assert len(figure.axes) == 2 and figure.axes[0].lines
    summary = card.summary()
    assert summary["audit/eps=0.1/reported"] == 100.0 and summary["audit/eps=0.1/flagged/unavailable_gradients"] == 100.0


@pytest.mark.parametrize("bad, message", [
    (lambda x, y: (x * 2, y), "values in"),
    (lambda x, y: (x, y[:-1]), "does not label x"),
    (lambda x, y: (x, y + 10), "do not fit the model's 10 classes"),
])
def test_bad_images_and_labels_are_refused_in_one_line(bad, message):
    model, x, y, eps, _ = zoo("baseline")
    x, y = bad(x[:8], y[:8])
    with pytest.raises(ConfigError, match=message):
        audit(model, x, y, [eps], progress=False)


@pytest.mark.parametrize("eps", [-0.1, float("nan"), [], "0.1"])
def test_bad_eps_is_refused(eps):
    model, x, y, _, _ = zoo("baseline")
    with pytest.raises(ConfigError, match="eps"):
        audit(model, x[:8], y[:8], eps, progress=False)


def test_logits_of_the_wrong_shape_are_refused():
    model, x, y, eps, _ = zoo("baseline")
    with pytest.raises(ConfigError, match=r"logits of shape \(N, classes\)"):
        audit(torch.nn.Flatten(0), x[:8], y[:8], [eps], progress=False)


# --- the command --------------------------------------------------------------------------------

QUICK = ["--dataset", "mnist", "--synthetic", "--n", "40", "--eps", "0.1", "--budget", "quick", "--no-progress"]


@pytest.fixture(scope="module")
def blf_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("audit") / "run"
    train(folder, "head=blf")
    return folder


def run_command(capsys, *args):
    """`python -m blf.audit ARGS` in process: (exit status, stdout, stderr)."""
    try:
        code = command.main([str(a) for a in args])
    except SystemExit as exit_:  # argparse's refusals
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error(code, err):
    assert code == 2, (code, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def test_the_command_audits_a_run_folder_and_a_checkpoint(blf_run, tmp_path, capsys):
    code, out, err = run_command(capsys, blf_run, *QUICK, "--out", tmp_path / "card")
    assert code == 0, err
    assert "# Audit of run (run folder)" in out and "SYNTHETIC" in out
    assert sorted(p.name for p in (tmp_path / "card").iterdir()) == ["audit.json", "audit.md", "audit.pdf", "audit.png"]
    data = json.loads((tmp_path / "card" / "audit.json").read_text())
    assert data["subject"]["head"] == "blf" and data["subject"]["bounded_head"] and data["settings"]["n"] == 40
    code, out, err = run_command(capsys, blf_run / "checkpoints" / "best.pt", *QUICK)
    assert code == 0 and "(checkpoint)" in out, err
    # The same card is not written over without --force.
    code, _, err = run_command(capsys, blf_run, *QUICK, "--out", tmp_path / "card")
    assert "already holds" in one_error(code, err)


@pytest.mark.parametrize("fmt, kind", [("state_dict", "state_dict export"), ("torch_export", "torch_export"),
                                       ("torchscript", "torchscript")])
def test_the_command_audits_every_export(blf_run, tmp_path, capsys, fmt, kind):
    from blf.export import export

    export(blf_run, fmt, tmp_path / fmt)
    program = fmt != "state_dict"
    if program:  # a program is its author's code: loaded only on the user's word
        code, _, err = run_command(capsys, tmp_path / fmt, *QUICK)
        assert "--trust-code" in one_error(code, err) and "runs its author's code" in err
    code, out, err = run_command(capsys, tmp_path / fmt, *QUICK, *(["--trust-code"] if program else []))
    assert code == 0, err
    assert f"({kind})" in out
    data_prelogits = "state_dict" == fmt  # rebuilt as our classifier: pre-logits and head known
    assert ("pgd_dlr_prelogits" in out) == data_prelogits or "unavailable gradients | 0.0%" in out


def test_the_command_audits_a_factory_with_weights_and_a_head(blf_run, tmp_path, capsys):
    state = torch.load(blf_run / "checkpoints" / "best.pt", weights_only=True)["model"]
    network = {k.removeprefix("network."): v for k, v in state.items() if k.startswith("network.")}
    torch.save(network, tmp_path / "weights.pt")
    code, out, err = run_command(capsys, tmp_path / "weights.pt", "--model", "blf.nn.models:TwoConvTwoFC",
                                 "--head", "blf", "--gamma", "1.0", *QUICK)
    assert code == 0, err
    assert "blf.nn.models:TwoConvTwoFC + blf (gamma=1) (factory + weights)" in out


def test_the_command_audits_a_factory_with_keyword_arguments_and_no_weights(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    code, out, err = run_command(capsys, "--model", "audit_zoo:blocks", "--arg", "scale=20", "--arg", "centre=0.4",
                                 *QUICK)
    assert code == 0, err
    assert "audit_zoo:blocks (factory)" in out
    assert sys.modules["audit_zoo"].LAST_BUILT == {"scale": 20, "centre": 0.4}


@pytest.mark.parametrize("setup, args, expected", [
    (lambda d: (d / "notes.txt").write_text("hello"), ["{d}/notes.txt"], "unreadable: not a torch.save archive"),
    (lambda d: (d / "empty").mkdir(), ["{d}/empty"], "a folder of no known kind"),
    (lambda d: None, ["{d}/missing"], "does not exist"),
    (lambda d: None, ["--model", "audit_zoo:raising"], "raised ValueError"),
    (lambda d: None, ["--model", "audit_zoo:no_such_factory"], "has no callable no_such_factory"),
    (lambda d: None, ["--model", "not a spec"], "is not package.module:factory"),
    (lambda d: None, ["--model", "audit_zoo:three_dimensional"], "logits of shape (N, classes)"),
    (lambda d: torch.save({"weight": torch.zeros(3)}, d / "w.pt"), ["{d}/w.pt", "--model", "blf.nn.models:TwoConvTwoFC"],
     "does not fit the model"),
    (lambda d: None, ["--model", "audit_zoo:blocks", "--arg", "oops"], "is not key=value"),
    (lambda d: None, ["--model", "audit_zoo:blocks", "--head", "nonsense"], "--head"),
])
def test_bad_targets_are_refused_in_one_line_and_write_nothing(tmp_path, capsys, monkeypatch, setup, args, expected):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    setup(tmp_path)
    out = tmp_path / "card"
    code, _, err = run_command(capsys, *[a.format(d=tmp_path) for a in args], *QUICK, "--out", out)
    assert expected in one_error(code, err)
    assert not out.exists()


@pytest.mark.parametrize("args, expected", [
    (["--eps", "-0.1"], "is not a budget"),
    (["--eps", "nan"], "is not a budget"),
    (["--n", "100000"], "exceeds the 500 test images"),
    (["--first", "0"], "not a number of examples"),
    (["--budget", "huge"], "invalid choice"),
])
def test_bad_options_are_refused_in_one_line(tmp_path, capsys, monkeypatch, args, expected):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    base = list(QUICK)
    for option in ("--eps", "--n", "--budget"):  # the bad value replaces QUICK's
        if option in args:
            i = base.index(option)
            del base[i:i + 2]
    code, _, err = run_command(capsys, "--model", "audit_zoo:blocks", *base, *args, "--out", tmp_path / "card")
    assert expected in one_error(code, err)
    assert not (tmp_path / "card").exists()


def test_strict_fails_unless_reliable_and_matching(blf_run, capsys):
    code, _, err = run_command(capsys, blf_run, *QUICK, "--strict")
    assert code == 1 and "--strict" in err  # 40 examples and the quick budget cannot be called reliable


def test_audit_is_the_library_function_and_its_card_type():
    import blf

    assert blf.audit is audit and "audit" in blf.__all__ and "Audit" in blf.__all__ and blf.Audit is Audit


def test_evaluate_runs_the_audit_as_an_analysis_into_records_card_and_wandb(blf_run, monkeypatch):
    from conftest import evaluate
    from offline_wandb import read

    monkeypatch.setenv("WANDB_MODE", "offline")
    outcome = evaluate(blf_run, "analysis=[audit]", "analysis.audit.budget=quick", "analysis.audit.max_n=24",
                       "analysis.audit.eps=[0.1]", "logger=wandb", "attack=[pgd]", "attack.pgd.nb_iter=3")
    (row,) = [r for r in outcome.rows if r["kind"] == "audit"]
    assert row["attack"] == "audit_quick" and row["eps"] == 0.1 and row["audit_n"] == 24
    assert row["audit.verdict"] == "inconclusive" and row["reported_accuracy"] >= row["accuracy"]
    card = json.loads((blf_run / "analysis" / "audit_quick.json").read_text())
    assert card["eps"][0]["audited"]["accuracy"] == row["accuracy"]
    assert (blf_run / "analysis" / "audit_quick.png").is_file() and (blf_run / "analysis" / "audit_quick.md").is_file()
    (folder,) = sorted((blf_run / "wandb").glob("offline-run-*"))[-1:]
    run = read(folder)
    assert run.summary["audit/eps=0.1/audited"] == pytest.approx(row["accuracy"])
    assert run.summary["audit/eps=0.1/audited_verdict"] == "inconclusive"
    assert "audit/figure/_type" in run.history_keys  # an image (W&B flattens its fields)


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{k}: &{k} [{', '.join(['*' + p] * 9)}]\n" for p, k in zip("abcdefgh", "bcdefghi"))


def test_a_yaml_alias_bomb_in_what_the_audit_reads_is_refused_in_seconds(blf_run, tmp_path, capsys):
    import shutil
    import time

    from blf.export import export

    export(blf_run, "state_dict", tmp_path / "export")
    (tmp_path / "export" / "config.yaml").write_text(BOMB)
    start = time.perf_counter()
    code, _, err = run_command(capsys, tmp_path / "export", *QUICK, "--out", tmp_path / "card")
    assert "config.yaml" in one_error(code, err) and time.perf_counter() - start < 20
    assert not (tmp_path / "card").exists()
    # A run folder's .hydra files are not read by the audit (it reads the checkpoint): bombs there change nothing.
    run = tmp_path / "run"
    shutil.copytree(blf_run, run, ignore=shutil.ignore_patterns("analysis", "wandb"))
    (run / ".hydra").mkdir(exist_ok=True)
    for name in ("config.yaml", "overrides.yaml", "hydra.yaml"):
        (run / ".hydra" / name).write_text(BOMB)
    start = time.perf_counter()
    code, out, err = run_command(capsys, run, *QUICK)
    assert code == 0 and "# Audit of run" in out, err
    assert time.perf_counter() - start < 60
