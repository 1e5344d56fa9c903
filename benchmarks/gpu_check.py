"""GPU check (`make gpu-check`): what paper-scale training costs on this machine, and whether the
whole path works on it, in one JSON within 8 minutes.

Every timed case is the training path src/train.py runs, built by `blf.assembly.for_training` from
a composed config (CIFAR-shaped data already on the device, channels-last, the precision policy,
torch.compile when asked), at the paper's batch size (128):
- ResNet-18: standard training, PGD-7 adversarial training (section 5.1) and TRADES, each in
  fp32 and bf16, eager and compiled; WRN-34-10: PGD-7 adversarial training, the same four ways;
  the peer: ResNet-18 PGD-7 AT with the examples crafted by advertorch's `LinfPGDAttack`; the fast
  path: `trainer.compile=reduce-overhead` (CUDA graphs) with fused SGD, in bf16.
  Each case runs one untimed pass over its batches (warm-up; compilation for compiled cases,
  reported as `warmup_seconds`) and then the same batches timed: images/s, the seconds of a
  50,000-image epoch, the FLOPs of one image's step (torch.utils.flop_counter), the TFLOP/s they
  make and their share of the device's bf16 matrix rate (measured first, in the same call), and on
  CUDA the host synchronisations in the timed pass.
- PGD-100 evaluation of ResNet-18 (images/s, fp32 and bf16).
- bf16 against fp32: a ResNet-18 trained briefly on learnable synthetic data, its clean accuracy
  under bf16 autocast against fp32 (the integrity check `precision`), and the same training run
  in bf16 against fp32.
- Packing: 1, 2, 4, 8, 16 and 32 concurrent processes each training 2C2F with PGD-40 AT on
  MNIST-shaped data; their aggregate images/s.
- The end-to-end stage (benchmarks/end_to_end.py): the real apps on tiny settings on the device.
In order, within one time budget (`--budget-s`, 470 s): the eager cases, PGD-100, the bf16 check,
the fast path, packing (each only while it leaves the end-to-end stage its share), the end-to-end
stage, then the compiled cases in torch's default mode while time is left; whatever would not fit
is written as skipped.

Needs hydra-core and omegaconf beside torch (`make gpu-wheels` where pip works); wandb is not
imported. `--tiny` shrinks everything (tests run it on the CPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch._dynamo.utils import counters
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

import end_to_end  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from blf import assembly  # noqa: E402
from blf.eval import integrity  # noqa: E402
from blf.eval.attacks.pgd import PGD, pgd  # noqa: E402
from blf.eval.robustness import clean_accuracy  # noqa: E402
from blf.nn import models, precision  # noqa: E402
from blf.run import storage  # noqa: E402
from blf.train import loop, objectives  # noqa: E402

EPOCH_IMAGES = 50_000  # CIFAR-10's training set
CASES = [("resnet18", training) for training in ("standard", "pgd_at", "trades")] + [("wrn34_10", "pgd_at")]
# The peer: PGD-7 AT whose examples advertorch's LinfPGDAttack crafts (eager, both precisions).
PEER = ("resnet18", "pgd_at")
# The fast path: CUDA graphs through torch.compile (on a CPU: its default mode) and fused SGD, bf16.
FAST = [("resnet18", "standard"), ("resnet18", "pgd_at"), ("wrn34_10", "pgd_at")]
FAST_COMPILE = "reduce-overhead"
# Seconds a case needs at least, eager and compiled, on a GPU and on the CPU (--tiny): a compiled
# PGD-7 AT case took 200-280 s to compile on the 2-core CPU even for tiny networks.
NEEDS = {False: {False: 20.0, True: 60.0}, True: {False: 20.0, True: 150.0}}
# Seconds kept for the end-to-end stage (its nine app starts, two compilations, every attack): no
# stage before it starts within them of the budget's end. On a GPU, an estimate; on the 2-core CPU
# (--tiny) the stage took 5 min 15 s.
E2E_SECONDS = {False: 260.0, True: 420.0}
# Width 8: a ResNet-18 of width 4 crashed torch.compile'd training on the CPU (double free).
TINY = {"resnet18": ["model.width=8", "model.blocks=[1,1,1,1]"], "wrn34_10": ["model.depth=10", "model.widen_factor=1"]}
PACKING = {False: (1, 2, 4, 8, 16, 32), True: (1, 2)}


def config(model: str, training: str, amp: str, compiled, images: int, tiny: bool, batch: int | None,
           device: str, extra: tuple[str, ...] = (), dataset: str = "cifar10"):
    compile_value = str(compiled).lower() if isinstance(compiled, bool) else compiled
    overrides = [
        f"dataset={dataset}", "dataset.synthetic=true", f"dataset.synthetic_train={images}", "dataset.synthetic_test=1000",
        f"model={model}", f"training={training}", f"trainer.amp={amp}", f"trainer.compile={compile_value}",
        "logger=none", "progress=false", "attack=[]", "analysis=[]", f"device={device}", *extra,
    ]
    if batch:
        overrides.append(f"trainer.batch_size={batch}")
    if tiny and model in TINY:
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


class AdvertorchPGDAdversarial(objectives.PGDAdversarial):
    """The peer's training mode: Madry et al.'s PGD-AT with the examples crafted by advertorch's
    `LinfPGDAttack` (the same random start, steps and projection as ours)."""

    def adversarial(self, classifier, x, y):
        # The PGD attack's own advertorch route (`attack.pgd.implementation=advertorch`).
        attack = PGD([self.eps], self.nb_iter, self.eps_iter, implementation="advertorch")
        with models.frozen(classifier):
            return attack.once(classifier, x, y, self.eps, y)


class FlopCount(TorchDispatchMode):
    """Counts the FLOPs of every op that torch.utils.flop_counter knows (matmuls, convolutions and
    their gradients). FlopCounterMode itself also tracks modules, by hooks that fail inside
    `autograd.grad` on a leaf input (TRADES' inner maximisation)."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        count = flop_registry.get(func._overloadpacket)
        if count is not None:
            self.total += count(*args, **kwargs, out_val=out)
        return out


def step_flops(run: assembly.Assembly) -> float:
    """FLOPs of one training step per image (the attack's steps included), counted on the eager
    classifier over one batch."""
    settings, opt = run.optimisation.settings, run.optimisation
    x, y = run.dataset.train.batch(slice(0, settings.batch_size), run.device)
    run.classifier.train()
    with FlopCount() as counter, precision.autocast(run.device, settings.amp):
        loss, _ = run.training.loss(run.classifier, x, y, run.regularizer)
        loss.backward()
    opt.optimizer.zero_grad(set_to_none=True)
    return counter.total / len(y)


def host_syncs(run: assembly.Assembly, generator: torch.Generator) -> int | None:
    """Host synchronisations in one pass of the training loop (CUDA's sync debug mode); None on a CPU."""
    if run.device.type != "cuda":
        return None
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            one_pass(run, generator)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def training_case(model: str, training: str, amp: str, compiled, args, *, peer: bool = False,
                  peak_tflops: float | None = None) -> dict:
    batch = args.batch or (8 if args.tiny else 128)
    fast = compiled == FAST_COMPILE
    if compiled:
        # A fresh compiler for each case: with one process for all of them, the 8th compilation of the
        # same `forward` hit dynamo's recompile limit and that case silently ran eager.
        torch._dynamo.reset()
        counters.clear()
    extra = ("+optim.fused=true",) if fast else ()
    run = assembly.for_training(config(model, training, amp, compiled, args.batches * batch, args.tiny, batch,
                                       args.device, extra))
    if peer:
        mode = run.training
        run = dataclasses.replace(run, training=AdvertorchPGDAdversarial(mode.eps, mode.nb_iter, mode.eps_iter))
    generator = torch.Generator().manual_seed(0)
    warmup = one_pass(run, generator)
    timed = one_pass(run, generator)
    rate = len(run.dataset.train) / timed
    flops = step_flops(run)
    tflops = flops * rate / 1e12
    result = {"images_per_s": round(rate, 1), "seconds_per_epoch": round(EPOCH_IMAGES / rate, 1),
              "warmup_seconds": round(warmup, 2), "batch_size": batch, "timed_images": len(run.dataset.train),
              "gflop_per_image": round(flops / 1e9, 4), "tflops": round(tflops, 4),
              "share_of_bf16_matrix_peak": round(tflops / peak_tflops, 5) if peak_tflops else None,
              "host_syncs_per_pass": host_syncs(run, generator) if not compiled else None}
    if fast:
        result["fused_sgd"] = bool(run.optimisation.optimizer.defaults.get("fused"))
    if compiled:  # what ran: the case says so where compilation fell back to eager
        graphs = int(counters["stats"]["unique_graphs"])
        result |= {"compiled_graphs": graphs, "ran": "compiled" if graphs else "eager (compilation fell back)"}
    return result


def matmul_peak(device: torch.device, tiny: bool) -> dict:
    """The device's bf16 matrix rate as this call measures it: square bf16 matmuls, TFLOP/s."""
    n, repeats = (256, 4) if tiny else (8192, 50)
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    a @ b  # warm-up (cuBLAS picks its kernel)
    sync(device)
    begin = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    seconds = time.perf_counter() - begin
    return {"matrix_size": n, "tflops": round(2 * n**3 * repeats / seconds / 1e12, 3)}


def pgd100(amp: str, args) -> dict:
    cfg = config("resnet18", "standard", amp, False, 16, args.tiny, args.batch, args.device)
    run = assembly.for_evaluation(cfg)
    n = 8 if args.tiny else 512
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
    images = 128 if args.tiny else 10_240
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


# Packing: one process of a level. It builds its run, warms up, says it is ready, waits for the
# others, trains its batches and writes when it began and ended (the machine's clock).
def packing_worker(folder: Path, device: str, batches: int, tiny: bool) -> None:
    batch = 8 if tiny else 128
    extra = ("training.nb_iter=2",) if tiny else ()
    run = assembly.for_training(config("2c2f", "pgd_at", "fp32", False, batches * batch, tiny, batch, device, extra,
                                       dataset="mnist"))
    generator = torch.Generator().manual_seed(os.getpid())
    one_pass(run, generator)  # warm-up
    (folder / f"ready-{os.getpid()}").touch()
    while not (folder / "go").exists():
        time.sleep(0.01)
    begin = time.time()
    one_pass(run, generator)
    storage.write_text(folder / f"done-{os.getpid()}.json",
                       json.dumps({"begin": begin, "end": time.time(), "images": len(run.dataset.train)}))


def packing_level(processes: int, args, deadline: float) -> dict:
    """Aggregate training images/s of `processes` concurrent 2C2F PGD-AT trainings on this device."""
    batches = 2 if args.tiny else 20
    with tempfile.TemporaryDirectory(prefix="blf-packing-") as tmp:
        folder = Path(tmp)
        argv = [sys.executable, str(Path(__file__).resolve()), "--packing-worker", str(folder), "--device", args.device,
                "--batches", str(batches), *(["--tiny"] if args.tiny else [])]
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        workers = [subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                   for _ in range(processes)]
        try:
            while len(list(folder.glob("ready-*"))) < processes:
                if any(w.poll() not in (None, 0) for w in workers) or time.perf_counter() > deadline:
                    raise RuntimeError("a worker failed or the budget ran out before all were ready")
                time.sleep(0.05)
            (folder / "go").touch()
            for worker in workers:
                worker.wait(timeout=max(deadline - time.perf_counter(), 1))
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            for worker in workers:
                worker.kill()
            errors = [w.stderr.read().strip().splitlines()[-1:] for w in workers if w.wait() not in (0, None)]
            return {"processes": processes, "status": f"failed: {error}; {errors[:1]}"}
        done = [json.loads(p.read_text()) for p in folder.glob("done-*.json")]
    if len(done) < processes:
        return {"processes": processes, "status": f"failed: {processes - len(done)} workers wrote no result"}
    wall = max(d["end"] for d in done) - min(d["begin"] for d in done)
    images = sum(d["images"] for d in done)
    return {"processes": processes, "status": "measured", "images_per_s": round(images / wall, 1),
            "wall_seconds": round(wall, 2), "images": images}


def packing(args, deadline: float) -> list[dict]:
    levels, result = PACKING[args.tiny], []
    for processes in levels:
        if time.perf_counter() > deadline:
            result.append({"processes": processes, "status": "skipped: budget"})
            continue
        result.append(packing_level(processes, args, deadline))
        print(json.dumps(result[-1]), flush=True)
    single = next((r["images_per_s"] for r in result if r["processes"] == 1 and r["status"] == "measured"), None)
    for row in result:
        if single and row["status"] == "measured":
            row["throughput_vs_one"] = round(row["images_per_s"] / single, 2)
    return result


def device_facts(device: torch.device) -> dict:
    facts = {"device": device.type, "torch": torch.__version__, "python": platform.python_version()}
    if device.type == "cuda":
        facts |= {"name": torch.cuda.get_device_name(device), "cuda": torch.version.cuda,
                  "memory_gib": round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)}
    else:
        facts |= {"name": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}
    return facts


def plan(args) -> list[dict]:
    """The timed training cases in the order they run: eager (with the peer), then compiled (the
    fast path first)."""
    amps = ("fp32", "bf16")
    cases = [{"model": m, "training": t, "amp": a, "compile": False} for m, t in CASES for a in amps]
    cases += [{"model": PEER[0], "training": PEER[1], "amp": a, "compile": False, "implementation": "advertorch"}
              for a in amps]
    cases += [{"model": m, "training": t, "amp": "bf16", "compile": FAST_COMPILE} for m, t in FAST]
    cases += [{"model": m, "training": t, "amp": a, "compile": True} for m, t in CASES for a in amps]
    return cases


def peer_ratios(cases: list[dict]) -> dict:
    """Our PGD-7 AT step against the advertorch-based one, per precision (images/s ratio)."""
    ratios = {}
    for amp in ("fp32", "bf16"):
        pick = [c for c in cases if (c["model"], c["training"], c["amp"], c["compile"]) == (*PEER, amp, False)
                and c["status"] == "measured"]
        ours = [c for c in pick if "implementation" not in c]
        theirs = [c for c in pick if c.get("implementation") == "advertorch"]
        if ours and theirs:
            ratios[amp] = round(ours[0]["images_per_s"] / theirs[0]["images_per_s"], 2)
    return ratios


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "gpu-check.json")
    parser.add_argument("--budget-s", type=float, default=470.0,
                        help="seconds for the whole check (default 470: under 8 minutes); stages that would not fit are skipped")
    parser.add_argument("--device", default="auto", help="auto | cuda | cpu")
    parser.add_argument("--batches", type=int, default=10, help="timed batches per case")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: the paper's, 128)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile cases")
    parser.add_argument("--no-end-to-end", action="store_true", help="skip the end-to-end stage")
    parser.add_argument("--no-packing", action="store_true", help="skip the packing measurement")
    parser.add_argument("--tiny", action="store_true", help="tiny networks and batches (a CPU test of the check)")
    parser.add_argument("--work", type=Path, default=None, help="the end-to-end stage's folder (default: a temporary one)")
    parser.add_argument("--packing-worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.packing_worker:
        packing_worker(args.packing_worker, args.device, args.batches, args.tiny)
        return 0
    start = time.perf_counter()
    device = assembly.device(args.device)
    args.device = str(device)  # the packing workers and the apps use the same device
    reserve = 0.0 if args.no_end_to_end else E2E_SECONDS[args.tiny]
    peak = matmul_peak(device, args.tiny)
    result = {"check": "gpu-check", **device_facts(device), "epoch_images": EPOCH_IMAGES, "budget_s": args.budget_s,
              "bf16_matrix_peak": peak, "training": [], "pgd100_eval": {}, "precision": None, "packing": None,
              "end_to_end": None}

    def left() -> float:
        return args.budget_s - (time.perf_counter() - start)

    def measure(case: dict, reserve_left: float) -> None:
        compiled = case["compile"]
        needs = NEEDS[args.tiny][bool(compiled)] + reserve_left
        if compiled and args.no_compile:
            case["status"] = "skipped: --no-compile"
        elif left() < needs:
            case["status"] = f"skipped: {needs:.0f} s needed, {max(left(), 0):.0f} s of the budget left"
        else:
            try:
                case |= training_case(case["model"], case["training"], case["amp"], compiled, args,
                                      peer="implementation" in case, peak_tflops=peak["tflops"]) | {"status": "measured"}
            except Exception as error:  # noqa: BLE001 - a case that fails is reported, the others still run
                case["status"] = f"failed: {type(error).__name__}: {str(error).splitlines()[0][:300]}"
        print(json.dumps(case), flush=True)

    # In the order of what matters most when the budget is short: every stage before the end-to-end
    # one leaves it its share; the compiled cases in torch's default mode (measured before) come last.
    cases = plan(args)
    result["training"] = cases
    for case in (c for c in cases if not c["compile"]):
        measure(case, reserve)
    for amp in ("fp32", "bf16"):
        result["pgd100_eval"][amp] = pgd100(amp, args) if left() > 10 + reserve else {"status": "skipped: budget"}
    result["precision"] = agreement(args) if left() > 15 + reserve else {"status": "skipped: budget"}
    for case in (c for c in cases if c["compile"] == FAST_COMPILE):
        measure(case, reserve)
    result["packing"] = [{"status": "skipped: --no-packing"}] if args.no_packing else packing(
        args, start + args.budget_s - reserve)
    result["at_step_vs_advertorch"] = peer_ratios(cases)
    if args.no_end_to_end:
        result["end_to_end"] = {"status": "skipped: --no-end-to-end"}
    else:
        with tempfile.TemporaryDirectory(prefix="blf-e2e-") as tmp:
            work = args.work or Path(tmp)
            result["end_to_end"] = end_to_end.run(work, args.device, start + args.budget_s, args.tiny)
    for case in (c for c in cases if c["compile"] is True):
        measure(case, 0.0)
    result["wall_seconds"] = round(time.perf_counter() - start, 1)
    storage.write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out} ({result['wall_seconds']} s)")
    stage = result["end_to_end"]
    if stage.get("passed") is False:
        print(f"error: the end-to-end stage did not pass: {', '.join(stage['not_passed'])} "
              f"(their errors are in {args.out})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
