"""Helpers of the export tests: tiny trained runs of each network family, real images at a
network's input, and the README's loading snippets (run as they are written)."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from cli_args import IMAGENET, QUICK, cli_args

from densenet_lit.cli import run
from densenet_lit.data.digits import load_digits_tensor
from densenet_lit.models.spec import network_spec

README = Path(__file__).resolve().parent.parent / "README.md"
# The folder the README's snippets load from (the README's export command writes it).
SNIPPET_FOLDER = "densenet121-export"
SNIPPET_MARK = re.compile(r"<!-- export-snippet: (\w+) -->\s*```python\n(.*?)```", re.S)
# The tiny ImageNet of the export tests: 3 classes of 40x48 images, 32x32 crops.
IMAGENET_DATA = {"n_classes": 3, "n_per_class": 4, "n_val_per_class": 2}
IMAGENET_INIT = {"train_crop": 32, "eval_resize": 36, "eval_crop": 32, "num_workers": 0}


def train(root: Path, *extra: str, trainer: dict | None = None, **options: object) -> Path:
    """A quick ``fit`` through the CLI (two training batches); returns its run directory."""
    run(cli_args("fit", root, *extra, trainer={**QUICK, **(trainer or {})}, **options))
    (run_dir,) = {p.parent.parent for p in root.glob("*/*/checkpoints/last.ckpt")}
    return run_dir


def train_digits(root: Path) -> Path:
    """DenseNet-BC (L=10, k=4) on 16x16 digits, tested after fitting (a test error)."""
    return train(root, data_init={"image_size": 16}, run={"test_after_fit": True})


def train_imagenet(root: Path, data_dir: Path, **model: object) -> Path:
    """An ImageNet-style network (``model``: arch and size) on the tiny ImageNet in ``data_dir``."""
    return train(
        root,
        data=IMAGENET,
        batch_size=4,
        data_init={"data_dir": data_dir, **IMAGENET_INIT},
        model={"depth": None, "growth_rate": None, **model},
        trainer={"limit_val_batches": 1},
    )


def with_network(source: Path, target: Path, seed: int = 0, **model: object) -> Path:
    """A copy of the checkpoint ``source`` (its data module, callbacks and hyperparameters)
    holding the network ``model`` (e.g. ``arch="densenet121"``) instead, with its batch-norm
    statistics and affine weights drawn from ``seed`` (a trained-looking network without the
    cost of training it). Returns ``target``."""
    ckpt = torch.load(source, map_location="cpu", weights_only=True)
    hparams = {**ckpt["hyper_parameters"], "block_config": None, "growth_rate": None, **model}
    network = network_spec(hparams).build()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.2, generator=gen)
                module.running_var.uniform_(0.5, 1.5, generator=gen)
                module.weight.uniform_(0.5, 1.5, generator=gen)
                module.bias.normal_(0, 0.1, generator=gen)
    ckpt["hyper_parameters"] = hparams
    ckpt["state_dict"] = {f"model.{k}": v for k, v in network.state_dict().items()}
    ckpt.pop("optimizer_states", None)  # of the source's network
    torch.save(ckpt, target)
    return target


def real_images(n: int, channels: int, size: int, mean: list, std: list) -> torch.Tensor:
    """``n`` of scikit-learn's 8x8 digit photographs at ``size`` x ``size`` (bilinear), as
    ``channels`` channels, normalised with the export's ``mean`` and ``std`` (0-1 pixels)."""
    images, _ = load_digits_tensor(size)
    x = images[:n].float().div(255).expand(-1, channels, -1, -1)
    shape = (1, channels, 1, 1)
    return (x - torch.tensor(mean).view(shape)) / torch.tensor(std).view(shape)


def readme_snippets() -> dict[str, str]:
    """The README's loading snippets by name (``torchvision``, ``onnxruntime``, ``pt2``)."""
    return dict(SNIPPET_MARK.findall(README.read_text(encoding="utf-8")))


def run_snippet(name: str, export_dir: Path, work: Path, images: torch.Tensor) -> torch.Tensor:
    """Run the README's snippet ``name`` in ``work`` on ``images``, with the README's folder
    name pointing at ``export_dir``; returns the ``logits`` it computed."""
    import os

    work.mkdir(exist_ok=True)
    link = work / SNIPPET_FOLDER
    if link.is_symlink():
        link.unlink()
    link.symlink_to(export_dir, target_is_directory=True)
    namespace = {"images": images}
    here = os.getcwd()
    os.chdir(work)
    try:
        exec(compile(readme_snippets()[name], f"README.md:{name}", "exec"), namespace)
    finally:
        os.chdir(here)
    return torch.as_tensor(namespace["logits"])


# A checkpoint in Lightning's layout, made by hand (no training): the tiny DenseNet-BC on 8x8
# digits, for the tests of errors, EMA and the command line.
TINY_HPARAMS = {"arch": "densenet_cifar", "depth": 10, "growth_rate": 4, "in_channels": 1}
TINY_DATA = {"_class_path": "densenet_lit.data.DigitsDataModule", "image_size": 8}


def tiny_checkpoint(path: Path, seed: int = 0, **entries: object) -> Path:
    """Write the hand-made checkpoint to ``path`` (``entries`` added to its dictionary)."""
    torch.manual_seed(seed)
    network = network_spec(TINY_HPARAMS).build()
    ckpt = {
        "epoch": 3,
        "global_step": 12,
        "hyper_parameters": {**TINY_HPARAMS, "num_classes": 10},
        "datamodule_hyper_parameters": {**TINY_DATA, "benchmark": "digits"},
        "state_dict": {f"model.{k}": v for k, v in network.state_dict().items()},
        **entries,
    }
    torch.save(ckpt, path)
    return path
