"""GPU check (`make gpu-check`): what paper-scale training costs on this machine, in one JSON.

Every case is the training path src/train.py runs, built by `blf.assembly.for_training` from a
composed config (CIFAR-shaped data already on the device, channels-last, the precision policy,
torch.compile when asked), at the paper's batch size (128):
- ResNet-18: standard training, PGD-7 adversarial training (section 5.1) and TRADES, each in
  fp32 and bf16, eager and compiled; WRN-34-10: PGD-7 adversarial training, the same four ways.
  Each case runs one untimed pass over its batches (warm-up; compilation for compiled cases,
  reported as `warmup_seconds`) and then the same batches timed: images/s and the seconds of a
  50,000-image epoch.
- PGD-100 evaluation of ResNet-18 (images/s, fp32 and bf16).
- bf16 against fp32: a ResNet-18 trained briefly on learnable synthetic data, its clean accuracy
  under bf16 autocast against fp32 (the integrity check `precision`), and the same training run
  in bf16 against fp32.
The eager cases run first, then PGD-100 and the bf16 check, then the compiled cases, while the
time budget (`--budget-s`, 6 min) lasts; a case that would not fit is written as skipped, so the
whole check ends within 8 minutes.

Needs hydra-core and omegaconf beside torch (`make gpu-wheels` where pip works); wandb is not
imported. `--tiny` shrinks everything (tests run it on the CPU).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
from torch._dynamo.utils import counters

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from hydra import compose, initialize_config_dir  # noqa: E402

from blf import assembly  # noqa: E402
from blf.eval import integrity  # noqa: E402
from blf.eval.attacks.pgd import pgd  # noqa: E402
from blf.eval.robustness import clean_accuracy  # noqa: E402
from blf.nn import models, precision  # noqa: E402
from blf.run import storage  # noqa: E402
from blf.train import loop  # noqa: E402

EPOCH_IMAGES = 50_000  # CIFAR-10's training set
CASES = [("resnet18", training) for training in ("standard", "pgd_at", "trades")] + [("wrn34_10", "pgd_at")]
# Seconds a case needs at least (compilation of these networks takes tens of seconds).
# A compiled PGD-7 AT case took 200 s to compile on a 2-core CPU (tiny networks): the check
# starts one only with 150 s left of a 360 s budget, so that it ends within 8 minutes.
NEEDS = {False: 20.0, True: 150.0}
TINY = {"resnet18": ["model.width=4", "model.blocks=[1,1,1,1]"], "wrn34_10": ["model.depth=10", "model.widen_factor=1"]}


def config(model: str, training: str, amp: str, compiled: bool, images: int, tiny: bool, batch: int | None,
           device: str, extra: tuple[str, ...] = ()):
    overrides = [
        "dataset=cifar10", "dataset.synthetic=true", f"dataset.synthetic_train={images}", "dataset.synthetic_test=1000",
        f"model={model}", f"training={training}", f"trainer.amp={amp}", f"trainer.compile={str(compiled).lower()}",
        "logger=none", "progress=false", "attack=[]", "analysis=[]", f"device={device}", *extra,
    ]
    if batch:
        overrides.append(f"trainer.batch_size={batch}")
    if tiny:
        overrides += TINY[model]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def one_pass(run: assembly.Assembly, generator: torch.Generator) -> float:
    """Seconds of one pass of the training loop over the run's training images."""
    settings, opt = run.optimisation.settings, run.optimisation
    sync(run.device)
    begin = time.perf_counter()
    with precision.autocast(run.device, settings.amp):
        loop.train_epoch(opt.stepper, run.dataset.train, run.training, run.regularizer, opt.optimizer,
                         batch_size=settings.batch_size, generator=generator, device=run.device,
                         augment=settings.augment, desc="", progress=False)
    sync(run.device)
    return time.perf_counter() - begin


def training_case(model: str, training: str, amp: str, compiled: bool, args) -> dict:
    batch = args.batch or (8 if args.tiny else 128)
    if compiled:
        # A fresh compiler for each case: with one process for all of them, the 8th compilation of the
        # same `forward` hit dynamo's recompile limit and that case silently ran eager.
        torch._dynamo.reset()
        counters.clear()
    run = assembly.for_training(config(model, training, amp, compiled, args.batches * batch, args.tiny, batch, args.device))
    generator = torch.Generator().manual_seed(0)
    warmup = one_pass(run, generator)
    timed = one_pass(run, generator)
    rate = len(run.dataset.train) / timed
    result = {"images_per_s": round(rate, 1), "seconds_per_epoch": round(EPOCH_IMAGES / rate, 1),
              "warmup_seconds": round(warmup, 2), "batch_size": batch, "timed_images": len(run.dataset.train)}
    if compiled:  # what ran: the case says so where compilation fell back to eager
        graphs = int(counters["stats"]["unique_graphs"])
        result |= {"compiled_graphs": graphs, "ran": "compiled" if graphs else "eager (compilation fell back)"}
    return result


def pgd100(amp: str, args) -> dict:
    cfg = config("resnet18", "standard", amp, False, 16, args.tiny, args.batch, args.device)
    run = assembly.for_evaluation(cfg)
    n = 16 if args.tiny else 512
    x, y = run.dataset.test.batch(slice(0, n), run.device)
    with models.frozen(run.classifier), precision.autocast(run.device, amp):
        pgd(run.classifier, x[:2], y[:2], eps=8 / 255, nb_iter=2, eps_iter=2 / 255)  # warm-up
        sync(run.device)
        begin = time.perf_counter()
        pgd(run.classifier, x, y, eps=8 / 255, nb_iter=100, eps_iter=2 / 255)
        sync(run.device)
    rate = n / (time.perf_counter() - begin)
    return {"images_per_s": round(rate, 1), "seconds_per_10k_test_images": round(10_000 / rate, 1), "images": n}


def trained_accuracy(amp: str, args) -> tuple[float, assembly.Assembly]:
    images = 256 if args.tiny else 10_240
    cfg = config("resnet18", "standard", amp, False, images, args.tiny, args.batch, args.device,
                 ("optim.lr=0.05", "trainer.epochs=2"))
    run = assembly.for_training(cfg)
    generator = torch.Generator().manual_seed(0)
    for _ in range(cfg.trainer.epochs):
        one_pass(run, generator)
    with precision.autocast(run.device, amp):
        accuracy = clean_accuracy(run.classifier, run.dataset.test, 500, run.device)
    return accuracy, run


def agreement(args) -> dict:
    fp32, run = trained_accuracy("fp32", args)
    bf16, _ = trained_accuracy("bf16", args)
    verdict = integrity.precision_agreement(run.classifier, run.dataset.test, 500, run.device, tolerance=1.0)
    return {"fp32_model_under_bf16": {"status": verdict.status, "detail": verdict.detail},
            "trained_fp32_accuracy": round(fp32, 2), "trained_bf16_accuracy": round(bf16, 2),
            "trained_difference_points": round(bf16 - fp32, 2)}


def device_facts(device: torch.device) -> dict:
    facts = {"device": device.type, "torch": torch.__version__, "python": platform.python_version()}
    if device.type == "cuda":
        facts |= {"name": torch.cuda.get_device_name(device), "cuda": torch.version.cuda,
                  "memory_gib": round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)}
    else:
        facts |= {"name": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}
    return facts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "gpu-check.json")
    parser.add_argument("--budget-s", type=float, default=360.0, help="start no case after this (default 6 min)")
    parser.add_argument("--device", default="auto", help="auto | cuda | cpu")
    parser.add_argument("--batches", type=int, default=10, help="timed batches per case")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: the paper's, 128)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile cases")
    parser.add_argument("--tiny", action="store_true", help="tiny networks and batches (a CPU test of the check)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    device = assembly.device(args.device)
    amps = ["fp32", "bf16"]
    result = {"check": "gpu-check", **device_facts(device), "epoch_images": EPOCH_IMAGES, "budget_s": args.budget_s,
              "training": [], "pgd100_eval": {}, "precision": None}

    def left() -> float:
        return args.budget_s - (time.perf_counter() - start)

    for compiled in (False, True):
        for model, training in CASES:
            for amp in amps:
                case = {"model": model, "training": training, "amp": amp, "compile": compiled}
                if compiled and args.no_compile:
                    case["status"] = "skipped: --no-compile"
                elif left() < NEEDS[compiled]:
                    case["status"] = f"skipped: {NEEDS[compiled]:.0f} s needed, {max(left(), 0):.0f} s of the budget left"
                else:
                    try:
                        case |= training_case(model, training, amp, compiled, args) | {"status": "measured"}
                    except Exception as error:  # noqa: BLE001 - a case that fails is reported, the others still run
                        case["status"] = f"failed: {type(error).__name__}: {str(error).splitlines()[0][:300]}"
                result["training"].append(case)
                print(json.dumps(case), flush=True)
        if not compiled:  # before the compiled cases, whose compilation is the least predictable part
            for amp in amps:
                result["pgd100_eval"][amp] = pgd100(amp, args) if left() > 10 else {"status": "skipped: budget"}
            result["precision"] = agreement(args) if left() > 15 else {"status": "skipped: budget"}
    result["wall_seconds"] = round(time.perf_counter() - start, 1)
    storage.write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out} ({result['wall_seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
