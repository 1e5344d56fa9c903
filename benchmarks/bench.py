"""Throughput benchmarks (`make bench`): printed and written to bench/latest.json.

Training pipeline (2C2F, MNIST, batch 64, the appendix B.2 optimiser):
- `bare_step`: forward + loss + backward + SGD step on one batch already in memory, repeated;
  the ceiling for any input pipeline;
- `pipeline_epoch`: one epoch of `trainer.train_epoch` (shuffle, index, uint8 -> float,
  step, on-device accumulation), the loop `src/train.py` runs;
- `dataloader_epoch`: the same epoch through torchvision's MNIST dataset (PIL + ToTensor per
  sample) and a torch DataLoader, the common way to write it.
Targets: pipeline >= 90% of bare steps; pipeline >= 2x faster than the DataLoader loop.

CIFAR-10 (ResNet-18 by default, WRN-34-10 with --cifar-models): images/s of a standard
training step, a PGD-7 adversarial-training step and PGD-100 evaluation, on whatever device
runs it (named in the output), in float32 and, on a GPU, bfloat16.

PGD (MNIST, trained 2C2F and 4C3F, the same inputs and random starts for all): our PGD-40
against advertorch's LinfPGDAttack called plainly (model in eval mode) and inside
advertorch's ctx_noparamgrad_and_eval, with the robust accuracies side by side
(target: >= 1.5x advertorch plain, accuracies within 0.5 points); and one PGD step's cost
relative to one training step (target < 1.0x).
All use the channels-last 2C2F of src/train.py; `dataloader_nchw` is the DataLoader loop with
the default (NCHW) layout, as such loops are usually written. Measurements are interleaved
round by round and summarised by medians: a shared 2-core machine drifts by +-20%.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from blf import data
from blf.nn import heads, models
from blf.nn.regularizers import Regularizer
from blf.run import storage
from blf.run.allocator import keep_freed_memory
from blf.train import loop, objectives


def machine(device: torch.device) -> dict:
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def model_config(name: str):
    """The model's own config group (conf/model/<name>.yaml), as the apps compose it."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "conf"), version_base="1.3"):
        return compose("train", overrides=[f"model={name}"]).model


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def new_model(device, channels_last: bool = True, name: str = "2c2f"):
    torch.manual_seed(0)
    classifier = models.build(model_config(name), heads.Identity(), (1, 28, 28), 10).to(device)
    if channels_last:  # as src/train.py builds it (trainer.channels_last=true)
        classifier = classifier.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(classifier.parameters(), lr=0.01, momentum=0.5, weight_decay=0.01)
    return classifier, optimizer


def timed_train_steps(classifier, optimizer, x, y, steps: int) -> float:
    """Seconds for `steps` SGD steps on the batch (x, y)."""
    classifier.train()
    loss_fn = Regularizer()
    sync(x.device)
    start = time.perf_counter()
    for _ in range(steps):
        loss = loss_fn(classifier(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sync(x.device)
    return time.perf_counter() - start


def bare_steps(split: data.Split, batch_size: int, device) -> float:
    """Images/s of repeated train steps on one in-memory batch (an epoch's worth of steps)."""
    classifier, optimizer = new_model(device)
    x, y = split.batch(torch.arange(batch_size), device)
    steps = len(split) // batch_size
    return steps * batch_size / timed_train_steps(classifier, optimizer, x, y, steps)


def pipeline_epoch(split: data.Split, batch_size: int, device) -> float:
    """Images/s of one epoch of the training loop src/train.py runs."""
    classifier, optimizer = new_model(device)
    generator = torch.Generator().manual_seed(0)
    sync(device)
    start = time.perf_counter()
    loop.train_epoch(classifier, split, objectives.Standard(), Regularizer(), optimizer, batch_size=batch_size,
                        generator=generator, device=device, augment=None, desc="bench", progress=False)
    sync(device)
    return len(split) / (time.perf_counter() - start)


def dataloader_epoch(root: Path, batch_size: int, device, channels_last: bool) -> float:
    """Images/s of one epoch through torchvision's MNIST + ToTensor + DataLoader."""
    import torchvision
    from torch.utils.data import DataLoader

    dataset = torchvision.datasets.MNIST(str(root), train=True, transform=torchvision.transforms.ToTensor())
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=0)
    classifier, optimizer = new_model(device, channels_last)
    classifier.train()
    loss_fn = Regularizer()
    start = time.perf_counter()
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        loss = loss_fn(classifier(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sync(device)
    return len(dataset) / (time.perf_counter() - start)


def interleaved(measures: dict, rounds: int) -> dict[str, list[float]]:
    """Alternate the measurements round by round, so drift in machine load hits all alike."""
    results: dict[str, list[float]] = {name: [] for name in measures}
    for _ in range(rounds):
        for name, measure in measures.items():
            results[name].append(measure())
    return results


def training_pipeline(train: data.Split, data_dir: Path, device, rounds: int) -> dict:
    batch = 64
    runs = interleaved(
        {
            "bare": lambda: bare_steps(train, batch, device),
            "pipeline": lambda: pipeline_epoch(train, batch, device),
            "dataloader": lambda: dataloader_epoch(data_dir, batch, device, channels_last=True),
            "dataloader_nchw": lambda: dataloader_epoch(data_dir, batch, device, channels_last=False),
        },
        rounds,
    )
    median = {name: statistics.median(rates) for name, rates in runs.items()}
    fraction = statistics.median(p / b for p, b in zip(runs["pipeline"], runs["bare"]))
    speedup = statistics.median(p / d for p, d in zip(runs["pipeline"], runs["dataloader"]))
    speedup_nchw = statistics.median(p / d for p, d in zip(runs["pipeline"], runs["dataloader_nchw"]))
    print("Training, 2C2F on MNIST, batch 64:")
    print(f"  bare train step           {median['bare']:8.0f} img/s")
    print(f"  pipeline epoch            {median['pipeline']:8.0f} img/s  {100 * fraction:.0f}% of bare steps (target >= 90%)")
    print(f"  DataLoader epoch          {median['dataloader']:8.0f} img/s  pipeline {speedup:.2f}x faster (target >= 2x)")
    print(f"  DataLoader epoch, NCHW    {median['dataloader_nchw']:8.0f} img/s  pipeline {speedup_nchw:.2f}x faster")
    return {
        "images_per_s_median": median,
        "images_per_s_rounds": runs,
        "epoch_seconds_median": {name: len(train) / rate for name, rate in median.items()},
        "pipeline_fraction_of_bare": fraction,
        "pipeline_speedup_over_dataloader": speedup,
        "pipeline_speedup_over_dataloader_nchw": speedup_nchw,
    }


def trained(name: str, train: data.Split, device, n_train: int) -> models.Classifier:
    """A briefly trained model (one epoch on `n_train` images), so attacks face real margins."""
    classifier, optimizer = new_model(device, name=name)
    loop.train_epoch(classifier, train.first(n_train), objectives.Standard(), Regularizer(), optimizer, batch_size=64,
                        generator=torch.Generator().manual_seed(0), device=device, augment=None, desc="bench",
                        progress=False)
    return classifier.eval()


def pgd_compare(classifier, x, y, *, eps: float, nb_iter: int, eps_iter: float, chunk: int, repeats: int) -> dict:
    """Our PGD against advertorch's, plain and in ctx_noparamgrad_and_eval.

    The three alternate chunk by chunk (~0.3 s each, the order flipping every chunk), so the
    load bursts of a shared machine hit all three alike; each chunk starts all three from the
    same random start. Returns images/s and robust accuracy (%) per implementation.
    """
    from blf.compat import advertorch_attacks, advertorch_context
    from blf.eval.attacks import pgd

    adversary = advertorch_attacks().LinfPGDAttack(classifier, eps=eps, nb_iter=nb_iter, eps_iter=eps_iter)
    no_param_grad_and_eval = advertorch_context().ctx_noparamgrad_and_eval

    def ours(xs, ys):
        with models.frozen(classifier):
            return pgd(classifier, xs, ys, eps=eps, nb_iter=nb_iter, eps_iter=eps_iter)

    def plain(xs, ys):  # as users call it: model in eval mode, parameters as they are
        classifier.eval()
        return adversary.perturb(xs, ys)

    def in_context(xs, ys):
        with no_param_grad_and_eval(classifier):
            return adversary.perturb(xs, ys)

    runs = {"ours": ours, "advertorch": plain, "advertorch_ctx": in_context}
    seconds = dict.fromkeys(runs, 0.0)
    correct = dict.fromkeys(runs, 0)
    turn = 0
    for repeat in range(repeats):
        for start in range(0, len(y), chunk):
            xs, ys = x[start : start + chunk], y[start : start + chunk]
            names = list(runs) if turn % 2 == 0 else list(reversed(runs))
            turn += 1
            for name in names:
                torch.manual_seed(start)
                sync(x.device)
                begin = time.perf_counter()
                x_adv = runs[name](xs, ys)
                sync(x.device)
                seconds[name] += time.perf_counter() - begin
                if repeat == 0:
                    with torch.no_grad():
                        correct[name] += int((classifier(x_adv).argmax(1) == ys).sum())
    return {
        "images_per_s": {k: len(y) * repeats / v for k, v in seconds.items()},
        "robust_accuracy": {k: 100.0 * v / len(y) for k, v in correct.items()},
        "speedup_over_advertorch": seconds["advertorch"] / seconds["ours"],
        "speedup_over_advertorch_ctx": seconds["advertorch_ctx"] / seconds["ours"],
    }


def step_cost(train: data.Split, device, batch: int, rounds: int, steps: int = 20) -> float:
    """Time of one PGD step over one training step on the same batch size (median over
    alternating rounds of `steps` steps each)."""
    from blf.eval.attacks import pgd

    classifier, optimizer = new_model(device)
    x, y = train.batch(torch.arange(batch), device)
    ratios = []
    for _ in range(rounds):
        train_time = timed_train_steps(classifier, optimizer, x, y, steps)
        with models.frozen(classifier):
            begin = time.perf_counter()
            pgd(classifier, x, y, eps=0.3, nb_iter=steps, eps_iter=0.01)
            sync(device)
            ratios.append((time.perf_counter() - begin) / train_time)
    return statistics.median(ratios)


def pgd_speed(mnist: data.Dataset, device, repeats: int) -> dict:
    """Our PGD-40 against advertorch's on trained 2C2F and 4C3F, same inputs and starts."""
    out = {}
    eps, nb_iter, eps_iter = 0.1, 40, 0.01
    train = mnist.train.to(device)
    for name, n_train, n_test, chunk in (("2c2f", 60000, 500, 250), ("4c3f", 10000, 200, 50)):
        classifier = trained(name, train, device, n_train)
        x, y = mnist.test.first(n_test).batch(slice(None), device)
        result = pgd_compare(classifier, x, y, eps=eps, nb_iter=nb_iter, eps_iter=eps_iter, chunk=chunk, repeats=repeats)
        out[name] = {"eps": eps, "nb_iter": nb_iter, "images": n_test, "chunk": chunk, **result}
        print(f"PGD-{nb_iter}, {name.upper()} (1 epoch trained), {n_test} test images in chunks of {chunk}, eps {eps}:")
        for k, rate in result["images_per_s"].items():
            print(f"  {k:16s} {rate:8.1f} img/s   robust accuracy {result['robust_accuracy'][k]:.1f}%")
        print(f"  ours: {result['speedup_over_advertorch']:.2f}x advertorch (target >= 1.5x), "
              f"{result['speedup_over_advertorch_ctx']:.2f}x advertorch in ctx_noparamgrad_and_eval")

    out["pgd_step_over_train_step_2c2f"] = {str(b): step_cost(train, device, b, repeats * 4) for b in (64, 500)}
    for b, ratio in out["pgd_step_over_train_step_2c2f"].items():
        print(f"One PGD step costs {ratio:.2f}x a training step (2C2F, batch {b}; target < 1.0x)")
    return out


def cifar_speed(device, name: str, amp: str, rounds: int) -> dict:
    """Training and attack throughput of a CIFAR-10 network on random CIFAR-shaped batches:
    a standard SGD step, a PGD-7 adversarial-training step (section 5.1) and PGD-100
    evaluation, under the precision policy `amp`."""
    from blf.eval.attacks import pgd
    from blf.nn import precision

    gpu = device.type == "cuda"
    batch = 128 if gpu else 32  # the paper's batch on a GPU; fewer images keep a CPU run to minutes
    steps = 20 if gpu else 2
    torch.manual_seed(0)
    classifier = models.build(model_config(name), heads.Identity(), (3, 32, 32), 10).to(device)
    classifier = classifier.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(classifier.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x = torch.rand(batch, 3, 32, 32, device=device)
    y = torch.randint(10, (batch,), device=device)
    modes = {"standard_step": objectives.Standard(), "pgd7_at_step": objectives.PGDAdversarial(8 / 255, 7, 2 / 255)}

    def step_rate(mode) -> float:
        classifier.train()
        with precision.autocast(device, amp):
            mode.loss(classifier, x, y, Regularizer())[0].backward()  # warm-up (and compilation caches)
            sync(device)
            begin = time.perf_counter()
            for _ in range(steps):
                loss, _ = mode.loss(classifier, x, y, Regularizer())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            sync(device)
        return batch * steps / (time.perf_counter() - begin)

    def pgd100_rate() -> float:
        with models.frozen(classifier), precision.autocast(device, amp):
            sync(device)
            begin = time.perf_counter()
            pgd(classifier, x, y, eps=8 / 255, nb_iter=100, eps_iter=2 / 255)
            sync(device)
        return batch / (time.perf_counter() - begin)

    runs = interleaved({"standard_step": lambda: step_rate(modes["standard_step"]),
                        "pgd7_at_step": lambda: step_rate(modes["pgd7_at_step"]),
                        "pgd100_eval": pgd100_rate}, rounds)
    rate = {k: statistics.median(v) for k, v in runs.items()}
    out = {"model": name, "amp": amp, "batch": batch, "images_per_s": rate,
           "epoch_seconds_estimate": {k: 50000 / rate[k] for k in ("standard_step", "pgd7_at_step")},
           "pgd100_seconds_per_10k_test_images": 10000 / rate["pgd100_eval"]}
    print(f"CIFAR-10 {name}, batch {batch}, {amp}, on {device}:")
    print(f"  standard training step  {rate['standard_step']:9.1f} img/s  ({50000 / rate['standard_step']:.0f} s per 50k-image epoch)")
    print(f"  PGD-7 AT training step  {rate['pgd7_at_step']:9.1f} img/s  ({50000 / rate['pgd7_at_step']:.0f} s per epoch)")
    print(f"  PGD-100 evaluation      {rate['pgd100_eval']:9.1f} img/s  ({10000 / rate['pgd100_eval']:.0f} s per 10k test images)")
    return out


def audit_cost(mnist: data.Dataset, device) -> dict:
    """blf.audit with the standard budget on 1000 MNIST test images of a 2C2F at two eps (the
    audit's cost target: within 10 minutes on a 2-core CPU), and AutoAttack standard on the same
    images and eps, side by side: the audit is to cost at most as much and find at least as much.
    The model is trained one epoch here; the README states the cost on paper-scale runs too."""
    from blf.audit import audit
    from blf.eval.attacks import AutoAttackStandard
    from blf.nn.models import frozen

    classifier = trained("2c2f", mnist.train.to(device), device, 60000)
    x, y = mnist.test.subset(1000, 0).batch(slice(None), device)
    eps = [0.15, 0.3]
    start = time.perf_counter()
    card = audit(classifier, x, y, eps, dataset="mnist", budget="standard", device=device, progress=False)
    seconds = time.perf_counter() - start
    auto, auto_seconds = {}, 0.0
    with frozen(classifier):
        for value in eps:
            torch.manual_seed(0)
            start = time.perf_counter()
            attack = AutoAttackStandard([value], "standard", seed=0)
            points = torch.cat([attack.perturb(classifier, xb, yb, value) for xb, yb in zip(x.split(500), y.split(500))])
            auto_seconds += time.perf_counter() - start
            with torch.no_grad():
                auto[f"{value:g}"] = 100.0 * float((classifier(points).argmax(1) == y).float().mean())
    out = {"images": 1000, "eps": eps, "budget": "standard", "seconds": seconds,
           "per_eps_seconds": {f"{r.eps:g}": r.seconds for r in card.results},
           "answers": {f"{r.eps:g}": [a.verdict for a in card.answers(r)] for r in card.results if r.eps > 0},
           "audited": {f"{r.eps:g}": card.accuracy(r.eps) for r in card.results if r.eps > 0},
           "autoattack_standard": {"seconds": auto_seconds, "accuracy": auto},
           "time_ratio": seconds / auto_seconds}
    print(f"audit, 2C2F (1 epoch trained), 1000 test images, eps 0.15 and 0.3, standard budget: {seconds:.0f} s "
          f"(target < 600 s on a 2-core CPU); answers {out['answers']}; audited {out['audited']}")
    print(f"AutoAttack standard on the same images and eps: {auto_seconds:.0f} s, accuracy {auto}; audit / AutoAttack "
          f"time {out['time_ratio']:.2f}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench/latest.json"))
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--only", nargs="*", choices=["training", "pgd", "cifar", "audit"],
                        default=["training", "pgd", "cifar", "audit"])
    parser.add_argument("--cifar-models", nargs="*", default=["resnet18"], choices=["resnet18", "wrn34_10"])
    parser.add_argument("--amp", nargs="*", default=None, choices=["fp32", "bf16"],
                        help="precision policies for the CIFAR section (default: fp32, plus bf16 on a GPU)")
    args = parser.parse_args(argv)
    keep_freed_memory()  # as the apps do
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    mnist = data.load(OmegaConf.create({"name": "mnist", "root": str(args.data_dir), "download": True, "synthetic": False,
                                        "n_train": None}))
    print(f"device: {device}  threads: {torch.get_num_threads()}  rounds: {args.repeats}")
    result = {"machine": machine(device), "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if "training" in args.only:
        result["training_2c2f_mnist_batch64"] = training_pipeline(mnist.train.to(device), args.data_dir, device, args.repeats)
    if "pgd" in args.only:
        result["pgd_mnist"] = pgd_speed(mnist, device, args.repeats)
    if "cifar" in args.only:
        amps = args.amp or (["fp32", "bf16"] if device.type == "cuda" else ["fp32"])
        result["cifar10"] = [cifar_speed(device, name, amp, args.repeats) for name in args.cifar_models for amp in amps]
    if "audit" in args.only:
        result["audit_mnist_2c2f"] = audit_cost(mnist, device)
    storage.write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
