"""The suite's three sections: training steps per mode, loaders alone, and an epoch end to end.
Each runner fills the results it is given."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from densenet_lit.bench.common import (
    MODES,
    ModelSpec,
    Settings,
    guarded,
    log,
    release,
)
from densenet_lit.bench.epoch import OURS_PIPELINE, PLAIN_PIPELINE, our_epoch, plain_epoch
from densenet_lit.bench.loaders import (
    LoaderRow,
    imagenet_device_rows,
    our_cifar10,
    our_imagenet,
    plain_loader_throughput,
    torchvision_loader,
)
from densenet_lit.bench.report import (
    LIGHTNING,
    PLAIN,
    EpochRow,
    StepRow,
    runners_of,
)
from densenet_lit.bench.steps import (
    activation_mib,
    lightning_steps,
    plain_steps,
)
from densenet_lit.data.synthetic import IMAGENET_SIZE

# ---------------------------------------------------------------------------------- steps


def measure_runner(runner: str, spec: ModelSpec, mode_name: str, settings: Settings):
    mode = MODES[mode_name]
    if runner == LIGHTNING:
        return lightning_steps(spec, mode, settings)
    if runner == PLAIN and spec.has_torchvision_baseline:
        model = spec.torchvision(mode.memory_efficient)
    else:
        model = spec.ours(mode.memory_efficient)
    return plain_steps(model, spec, mode, settings)


def run_steps(
    settings: Settings,
    specs: dict[str, ModelSpec],
    out: dict[str, list[StepRow]],
    save: Callable[[], None],
) -> None:
    """Every model in every mode; rows go into ``out`` as they finish, each followed by
    ``save()`` (the partial JSON)."""
    cuda = settings.device.type == "cuda"
    for key in settings.models:
        spec = specs[key]
        runners = runners_of(spec)
        rows = out.setdefault(key, [])
        for mode_name in settings.modes:
            row = StepRow(model=key, mode=mode_name, batch=settings.batch[key])
            for r in range(settings.rounds):
                order = runners if r % 2 == 0 else runners[::-1]
                for runner in order:
                    if runner in row.errors:
                        continue
                    torch.manual_seed(0)
                    t = time.perf_counter()
                    res, err = guarded(
                        partial(measure_runner, runner, spec, mode_name, settings),
                        f"{key} {mode_name} {runner}",
                    )
                    release(settings.device)  # also after a failure (e.g. out of memory)
                    if err:
                        row.errors[runner] = err
                        log(f"{key} {mode_name} {runner}: n/a ({err})")
                        continue
                    if runner in row.runs:  # a later round: pool the windows
                        prev = row.runs[runner]
                        prev.window_ips += res.window_ips
                        if res.peak_bytes is not None:
                            prev.peak_bytes = max(prev.peak_bytes or 0, res.peak_bytes)
                    else:
                        row.runs[runner] = res
                    log(
                        f"{key} {mode_name} {runner} round {r + 1}: {res.images_per_s:.1f} img/s "
                        f"(first step {res.first_step_s:.2f} s, {time.perf_counter() - t:.0f} s)"
                    )
            memory(row, spec, settings, cuda)
            rows.append(row)
            save()


def memory(row: StepRow, spec: ModelSpec, settings: Settings, cuda: bool) -> None:
    mode = MODES[row.mode]
    if cuda:
        for runner in (PLAIN, LIGHTNING):
            run = row.runs.get(runner)
            if run is not None and run.peak_bytes is not None:
                row.memory_mib[runner] = run.peak_bytes / 2**20
        return
    nets = {LIGHTNING: lambda: spec.ours(mode.memory_efficient)}
    if spec.has_torchvision_baseline:
        nets[PLAIN] = lambda: spec.torchvision(mode.memory_efficient)
    for runner, build in nets.items():
        torch.manual_seed(0)
        value, err = guarded(
            lambda build=build: activation_mib(build(), spec, mode, settings),
            f"{row.model} {row.mode} activation memory",
        )
        if err:
            row.memory_errors[runner] = err
        else:
            row.memory_mib[runner] = value
    if not spec.has_torchvision_baseline:  # the plain loop trains the same network
        if LIGHTNING in row.memory_mib:
            row.memory_mib[PLAIN] = row.memory_mib[LIGHTNING]
        if LIGHTNING in row.memory_errors:
            row.memory_errors[PLAIN] = row.memory_errors[LIGHTNING]


# -------------------------------------------------------------------------------- loaders


def imagenet_loader_images(settings: Settings) -> int:
    """How many synthetic JPEGs the ImageNet loader row reads: at least four batches per
    default worker (outside --quick). With fewer, each epoch of the timed loop has fewer
    batches than workers, the prefetch queue drains at every epoch end, and the row would
    measure fewer workers than it names (16 workers, 320 images: at most 5 busy)."""
    if settings.quick:
        return settings.imagenet_train_images
    workers = our_imagenet(Path("."), settings.loader_batch).resolved_num_workers
    return max(settings.imagenet_train_images, 4 * workers * settings.loader_batch)


def run_loaders(
    settings: Settings,
    cifar_root: Path,
    svhn_root: Path,
    imagenet_root: Path,
    rows: list[LoaderRow],
    save: Callable[[], None],
) -> None:
    from densenet_lit.data import DigitsDataModule, SVHNDataModule, loader_throughput

    dev, b, n = settings.device, settings.loader_batch, settings.loader_batches
    worker_counts = sorted({0, settings.loader_workers})

    def add(loader: str, pipeline: str, workers: int, fn) -> None:
        value, err = guarded(fn, f"loader {loader} {pipeline} workers={workers}")
        rows.append(LoaderRow(loader, pipeline, workers, b, value, err))
        log(f"loader {loader} / {pipeline} / {workers} workers: {value or err}")
        save()

    ours = "ours: in-memory uint8, on-device normalise/flip/crop"
    for w in worker_counts:
        add(
            "CIFAR-10",
            ours,
            w,
            lambda w=w: loader_throughput(
                our_cifar10(cifar_root, b, w, augment=True, val_size=0), n, "train", dev
            ),
        )
        add(
            "CIFAR-10",
            "torchvision: PIL per image, RandomCrop+Flip+ToTensor+Normalize",
            w,
            lambda w=w: plain_loader_throughput(torchvision_loader(cifar_root, b, w, dev), n, dev),
        )
    add(
        "SVHN (train only)",
        "ours: in-memory uint8, on-device /255",
        0,
        lambda: loader_throughput(
            SVHNDataModule(str(svhn_root), b, val_size=0, use_extra=False), n, "train", dev
        ),
    )
    add(
        "digits (scikit-learn, real)",
        "ours: in-memory uint8, on-device normalise/crop",
        0,
        lambda: loader_throughput(DigitsDataModule(batch_size=b), n, "train", dev),
    )
    imagenet = our_imagenet(imagenet_root, b)
    jpegs = f"ImageNet (synthetic {IMAGENET_SIZE[1]}x{IMAGENET_SIZE[0]} JPEGs)"
    add(
        jpegs,
        "ours: decode + fb.resnet.torch augmentation per image in workers (default count)",
        imagenet.resolved_num_workers,
        lambda: loader_throughput(imagenet, settings.imagenet_loader_batches, "train", dev),
    )
    for pipeline, workers, measure in imagenet_device_rows(
        imagenet_root, b, settings.imagenet_loader_batches, dev
    ):
        add(jpegs, pipeline, workers, measure)


# ---------------------------------------------------------------------------------- epoch


def run_epochs(
    settings: Settings,
    specs: dict[str, ModelSpec],
    steps: dict[str, list[StepRow]],
    cifar_root: Path,
    rows: list[EpochRow],
    save: Callable[[], None],
) -> None:
    spec = specs["cifar"]
    step_rows = {r.mode: r for r in steps.get("cifar", [])}
    for mode_name in settings.epoch_modes:
        mode = MODES[mode_name]
        ref = step_rows.get(mode_name)
        for fn, runner, pipeline in (
            (our_epoch, LIGHTNING, OURS_PIPELINE),
            (plain_epoch, PLAIN, PLAIN_PIPELINE),
        ):
            torch.manual_seed(0)
            result, err = guarded(
                partial(fn, spec, mode, settings, cifar_root), f"epoch {mode_name} {runner}"
            )
            release(settings.device)
            step_ips = ref.ips(runner) if ref else None
            rows.append(EpochRow(mode_name, pipeline, result, err, step_ips))
            if result is not None:
                log(f"epoch {mode_name} {runner}: {result.images_per_s:.1f} img/s")
            else:
                log(f"epoch {mode_name} {runner}: n/a ({err})")
            save()
