"""`make gpu-check` and `make gpu-wheels`, the parts that run without a GPU: the check's cases,
its JSON and its time budget on the CPU (--tiny), the wheels, and wandb staying unimported
when `logger=none` (GPU machines have no wandb)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile

import pytest

from conftest import REPO


def check_module():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", *args], cwd=REPO, capture_output=True, text=True, timeout=900)


def test_the_check_measures_every_case_and_writes_one_json(tmp_path):
    out = tmp_path / "gpu-check.json"
    result = make(f"GPU_PYTHON={sys.executable}", f"GPU_CHECK_ARGS=--tiny --no-compile --batches 2 --out {out}", "gpu-check")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["torch"] and report["epoch_images"] == 50_000
    cases = [(c["model"], c["training"], c["amp"], c["compile"]) for c in report["training"]]
    expected = [(m, t, a, c) for c in (False, True) for m, t in check_module().CASES for a in ("fp32", "bf16")]
    assert cases == expected and len(cases) == 16
    for case in report["training"]:
        if case["compile"]:
            assert case["status"] == "skipped: --no-compile"
        else:
            assert case["status"] == "measured", case
            assert case["seconds_per_epoch"] == pytest.approx(50_000 / case["images_per_s"], rel=1e-2)
    assert set(report["pgd100_eval"]) == {"fp32", "bf16"} and report["pgd100_eval"]["bf16"]["images_per_s"] > 0
    assert report["precision"]["fp32_model_under_bf16"]["status"] in ("pass", "FAIL")
    assert {"trained_fp32_accuracy", "trained_bf16_accuracy"} <= set(report["precision"])


def test_cases_that_do_not_fit_the_budget_are_skipped_not_run(tmp_path):
    out = tmp_path / "gpu-check.json"
    assert check_module().main(["--tiny", "--budget-s", "0", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert all(c["status"].startswith("skipped: ") and "budget" in c["status"] for c in report["training"])
    assert report["precision"] == {"status": "skipped: budget"} and report["wall_seconds"] < 30


def test_without_hydra_and_without_wheels_it_says_what_to_do(tmp_path):
    bare = tmp_path / "python3"
    bare.write_text("#!/bin/sh\nexit 1\n")  # a Python that imports nothing of ours
    bare.chmod(0o755)
    result = make(f"GPU_PYTHON={bare}", f"GPU_WHEELS={tmp_path / 'none'}", "gpu-check")
    assert result.returncode != 0
    assert "lacks hydra-core and omegaconf" in result.stderr and "make gpu-wheels" in result.stderr


def test_gpu_wheels_names_the_pinned_packages():
    dry = make("-n", "gpu-wheels").stdout
    pins = {line.split()[0] for line in (REPO / "requirements.txt").read_text().splitlines()
            if line.split("==")[0] in ("hydra-core", "omegaconf", "advertorch", "pyautoattack")}
    assert len(pins) == 4 and all(pin in dry for pin in pins) and "antlr4-python3-runtime==4.9.3" in dry
    assert "--no-deps" in dry


@pytest.mark.slow
def test_gpu_wheels_are_pure_python(tmp_path):
    """Downloads (and builds where PyPI has only sources) the wheels: about 50 MB."""
    result = make(f"GPU_WHEELS={tmp_path / 'w'}", "gpu-wheels")
    assert result.returncode == 0, result.stderr[-3000:]
    wheels = sorted((tmp_path / "w").glob("*.whl"))
    assert len(wheels) == 5 and all(w.name.endswith("-py3-none-any.whl") for w in wheels)
    for wheel in wheels:
        assert zipfile.ZipFile(wheel).testzip() is None


def test_logger_none_does_not_import_wandb(tmp_path):
    """GPU machines have no wandb: with logger=none nothing may import it."""
    code = (
        "import sys\n"
        "class NoWandb:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'wandb' or name.startswith('wandb.'):\n"
        "            raise ImportError('wandb is not installed here')\n"
        "sys.meta_path.insert(0, NoWandb())\n"
        "sys.path.insert(0, 'tests')\n"
        "from conftest import train\n"
        f"train({str(tmp_path / 'run')!r}, 'logger=none')\n"
        "assert 'wandb' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert result.returncode == 0, result.stderr[-3000:]


def test_gpu_wheels_carry_code_not_examples(tmp_path):
    """make gpu-wheels trims what no app imports (pyautoattack's 45 MB example checkpoint)."""
    import importlib.util
    import zipfile

    spec = importlib.util.spec_from_file_location("trim_wheels", REPO / "tools" / "trim_wheels.py")
    trim_wheels = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(trim_wheels)
    wheel = tmp_path / "pyautoattack-0.2.0-py3-none-any.whl"
    files = {"pyautoattack/__init__.py": b"x = 1\n", "pyautoattack/examples/model_test.pt": b"0" * 5000,
             "pyautoattack-0.2.0.dist-info/METADATA": b"Name: pyautoattack\n"}
    record = "".join(f"{name},sha256=abc,{len(data)}\n" for name, data in files.items())
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr("pyautoattack-0.2.0.dist-info/RECORD", record + "pyautoattack-0.2.0.dist-info/RECORD,,\n")
    assert trim_wheels.trim(wheel) == 5000
    with zipfile.ZipFile(wheel) as archive:
        assert sorted(archive.namelist()) == ["pyautoattack-0.2.0.dist-info/METADATA", "pyautoattack-0.2.0.dist-info/RECORD",
                                              "pyautoattack/__init__.py"]
        assert "examples" not in archive.read("pyautoattack-0.2.0.dist-info/RECORD").decode()
    assert trim_wheels.trim(wheel) == 0  # nothing left to drop


def test_each_compiled_case_starts_from_a_fresh_compiler_and_says_what_ran(monkeypatch):
    module = check_module()
    resets = []
    monkeypatch.setattr(module.torch._dynamo, "reset", lambda: resets.append(1))
    monkeypatch.setattr(module, "one_pass", lambda run, generator: 1.0)  # no step: nothing compiles
    args = module.argparse.Namespace(batch=None, tiny=True, batches=1, device="cpu")
    case = module.training_case("resnet18", "standard", "fp32", True, args)
    assert resets == [1] and case["compiled_graphs"] == 0 and case["ran"] == "eager (compilation fell back)"
    def compiling(run, generator):  # a pass that compiles three graphs
        module.counters["stats"]["unique_graphs"] = 3
        return 1.0

    monkeypatch.setattr(module, "one_pass", compiling)
    case = module.training_case("resnet18", "standard", "fp32", True, args)
    assert case["ran"] == "compiled" and case["compiled_graphs"] == 3 and resets == [1, 1]
    assert "ran" not in module.training_case("resnet18", "standard", "fp32", False, args) and resets == [1, 1]
