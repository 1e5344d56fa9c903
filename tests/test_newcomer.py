"""What a new user meets first, as the README shows it: each command does what it says."""

from __future__ import annotations

import pytest

from conftest import TINY, bad, evaluate, run_app, train


def test_a_typo_hydra_suggests_as_an_addition_is_refused_with_a_did_you_mean(tmp_path):
    """`trainer.epoch=1` makes Hydra suggest `+trainer.epoch=1`, which nothing reads: refused
    before anything runs, and no folder is left."""
    # TINY: were the addition accepted, the run would be short.
    line = bad(run_app("train.py", *TINY, "+trainer.epoch=1", f"hydra.run.dir={tmp_path / 'run'}"))
    assert line.startswith("error: +trainer.epoch=1 adds a key that nothing reads (did you mean trainer.epochs?)")
    assert not (tmp_path / "run").exists()
    line = bad(run_app("evaluate.py", "+eval.nn=3", f"run_dir={tmp_path / 'run'}", "logger=none"))
    assert "(did you mean eval.n?)" in line and not (tmp_path / "run").exists()
    line = bad(run_app("train.py", "-m", *TINY, "+trainer.epoch=1,2", f"hydra.sweep.dir={tmp_path / 'sweep'}"))
    assert "did you mean trainer.epochs?" in line and not (tmp_path / "sweep").exists()


def test_an_addition_a_constructor_reads_is_accepted(tmp_path):
    outcome = run_app("train.py", *TINY, "trainer.epochs=1", "+optim.nesterov=true", "optim.momentum=0.9",
                      "analysis=[]", f"hydra.run.dir={tmp_path / 'run'}")
    assert outcome.returncode == 0, outcome.stderr[-2000:]


@pytest.mark.parametrize("nb_iter", [2, 5])
def test_the_convergence_check_tests_the_pgd_as_configured(tmp_path, nb_iter):
    run_dir = tmp_path / "run"
    train(run_dir, "trainer.epochs=1", "analysis=[]", "eval.integrity.enabled=false")
    outcome = evaluate(run_dir, "attack=[pgd]", f"attack.pgd.nb_iter={nb_iter}", "eval.integrity.enabled=true",
                       "analysis=[]", *[o for o in TINY if o.startswith("eval.integrity")])
    check = next(r for r in outcome.added if r["kind"] == "integrity" and r["check"] == "pgd_convergence")
    assert f"PGD-{nb_iter} (as evaluated)" in check["detail"]
    assert f"PGD-{nb_iter * 2} x 2 restarts" in check["detail"]  # TINY's iter_factor 2 and restarts 2


def test_the_demo_ends_with_its_table_and_how_to_read_it(tmp_path, capfd):
    from blf.study import driver

    code = driver.main(["demo", "--sweep-dir", str(tmp_path / "sweep"), "--out-dir", str(tmp_path / "out"),
                        *TINY, "trainer.epochs=1"])
    out = capfd.readouterr().out.rstrip().splitlines()
    assert code == 0
    table = (tmp_path / "out" / "demo.md").read_text().rstrip().splitlines()
    # The spec's title says 5 epochs and 500 images; the title says what ran (issue: titles state the settings).
    assert "[ran: 1 epoch, 32 test images, PGD-3]" in table[0]
    assert out[-len(table) - 3:-3] == table  # the table, a blank line, then the two lines of reading
    assert out[-2].startswith("How to read it: accuracy (%)") and "†" in out[-2]
    assert out[-1].startswith("Not comparable with the paper (") and "synthetic data in place of mnist" in out[-1]


@pytest.mark.parametrize("script", ["train.py", "evaluate.py"])
def test_a_python_without_the_environment_gets_one_line_naming_the_fix(script, tmp_path):
    import shutil
    import subprocess
    import sys

    from conftest import REPO

    bare = tmp_path / "bare"  # a Python that has none of the project's packages
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    python = bare / "bin" / "python"
    assert shutil.which(str(python))
    result = subprocess.run([str(python), str(REPO / "src" / script), "run_dir=x"], capture_output=True, text=True,
                            timeout=60, env={"PATH": "/usr/bin:/bin"})
    line = bad(result)
    assert "is not installed for" in line and "make install, then .venv/bin/python" in line
