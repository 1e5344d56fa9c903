"""Throughput benchmarks (`make bench`): printed and written to bench/latest.json.

Training pipeline (2C2F, MNIST, batch 64, the appendix B.2 optimiser):
- `bare_step`: forward + loss + backward + SGD step on one batch already in memory, repeated;
  the ceiling for any input pipeline;
- `pipeline_epoch`: one epoch of `trainer.train_epoch` (shuffle, index, uint8 -> float,
  step, on-device accumulation), the loop `src/train.py` runs;
- `dataloader_epoch`: the same epoch through torchvision's MNIST dataset (PIL + ToTensor per
  sample) and a torch DataLoader, the common way to write it.
Targets: pipeline >= 90% of bare steps; pipeline >= 2x faster than the DataLoader loop.
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

from . import data, heads, models, storage, trainer, training
from .regularizers import Regularizer


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


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def new_model(device, channels_last: bool = True):
    torch.manual_seed(0)
    classifier = models.build(OmegaConf.create({"name": "2c2f"}), heads.Identity(), 1, 10).to(device)
    if channels_last:  # as src/train.py builds it (trainer.channels_last=true)
        classifier = classifier.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(classifier.parameters(), lr=0.01, momentum=0.5, weight_decay=0.01)
    return classifier, optimizer


def bare_steps(split: data.Split, batch_size: int, device) -> float:
    """Images/s of repeated train steps on one in-memory batch (an epoch's worth of steps)."""
    classifier, optimizer = new_model(device)
    classifier.train()
    x, y = split.batch(torch.arange(batch_size), device)
    loss_fn = Regularizer()
    steps = len(split) // batch_size
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        loss = loss_fn(classifier(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sync(device)
    return steps * batch_size / (time.perf_counter() - start)


def pipeline_epoch(split: data.Split, batch_size: int, device) -> float:
    """Images/s of one epoch of the training loop src/train.py runs."""
    classifier, optimizer = new_model(device)
    generator = torch.Generator().manual_seed(0)
    sync(device)
    start = time.perf_counter()
    trainer.train_epoch(classifier, split, training.Standard(), Regularizer(), optimizer,
                        batch_size=batch_size, generator=generator, device=device, progress=False)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench/latest.json"))
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    mnist = data.load(OmegaConf.create({"name": "mnist", "root": str(args.data_dir), "download": True}))
    train = mnist.train.to(device)
    batch = 64
    print(f"device: {device}  threads: {torch.get_num_threads()}  rounds: {args.repeats}")
    runs = interleaved(
        {
            "bare": lambda: bare_steps(train, batch, device),
            "pipeline": lambda: pipeline_epoch(train, batch, device),
            "dataloader": lambda: dataloader_epoch(args.data_dir, batch, device, channels_last=True),
            "dataloader_nchw": lambda: dataloader_epoch(args.data_dir, batch, device, channels_last=False),
        },
        args.repeats,
    )
    median = {name: statistics.median(rates) for name, rates in runs.items()}
    fraction = statistics.median(p / b for p, b in zip(runs["pipeline"], runs["bare"]))
    speedup = statistics.median(p / d for p, d in zip(runs["pipeline"], runs["dataloader"]))
    speedup_nchw = statistics.median(p / d for p, d in zip(runs["pipeline"], runs["dataloader_nchw"]))
    print(f"bare train step           {median['bare']:8.0f} img/s")
    print(f"pipeline epoch            {median['pipeline']:8.0f} img/s  {100 * fraction:.0f}% of bare steps (target >= 90%)")
    print(f"DataLoader epoch          {median['dataloader']:8.0f} img/s  pipeline {speedup:.2f}x faster (target >= 2x)")
    print(f"DataLoader epoch, NCHW    {median['dataloader_nchw']:8.0f} img/s  pipeline {speedup_nchw:.2f}x faster")
    result = {
        "machine": machine(device),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "training_2c2f_mnist_batch64": {
            "images_per_s_median": median,
            "images_per_s_rounds": runs,
            "epoch_seconds_median": {name: len(train) / rate for name, rate in median.items()},
            "pipeline_fraction_of_bare": fraction,
            "pipeline_speedup_over_dataloader": speedup,
            "pipeline_speedup_over_dataloader_nchw": speedup_nchw,
        },
    }
    storage.write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
