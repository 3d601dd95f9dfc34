"""The modern recipe's augmentations of class-folder data sets (``auto_augment``,
``ra_magnitude``, ``random_erase``): off by default (the paper's pipeline byte for byte),
torchvision's transforms in torchvision's reference order when on, drawn from each image's
seed on both decode paths, and one clear error for each bad value."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as F

from densenet_lit.data import ImageNetDataModule
from densenet_lit.data.encoded import ParamSampler
from densenet_lit.data.modern_augment import ModernAugment, run_seeded
from densenet_lit.data.pil_pipeline import MEAN, STD, Lighting, train_transform
from densenet_lit.data.synthetic import write_smooth_imagenet

# fake_data("imagenet", **IMAGENET): 3 classes of 4 training and 2 validation images, 40x48
IMAGENET = {"n_classes": 3, "n_per_class": 4, "n_val_per_class": 2}
CROP = 32
SEEDS = [11, 12, 13, 14, 15, 16]


def module(root: Path, **kw) -> ImageNetDataModule:
    kw = {"batch_size": 4, "train_crop": CROP, "eval_resize": 36, "eval_crop": CROP, **kw}
    dm = ImageNetDataModule(data_dir=str(root), **{"num_workers": 0, **kw})
    dm.setup("fit")
    return dm


def first_image(root: Path) -> Image.Image:
    return Image.open(sorted((root / "train").rglob("*.JPEG"))[0]).convert("RGB")


def seeded(transform, image, seed: int) -> torch.Tensor:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transform(image)


def paper_by_hand(image: Image.Image) -> torch.Tensor:
    """fb.resnet.torch's training pipeline written out with torchvision's transforms."""
    steps = [
        v2.RandomResizedCrop(
            CROP, (0.08, 1.0), (3 / 4, 4 / 3), InterpolationMode.BICUBIC, antialias=True
        ),
        v2.PILToTensor(),
        v2.ToDtype(torch.float32, scale=True),
        v2.ColorJitter(0.4, 0.4, 0.4),
        Lighting(0.1),
        v2.RandomHorizontalFlip(0.5),
        v2.Normalize(MEAN, STD),
    ]
    for step in steps:
        image = step(image)
    return image.as_subclass(torch.Tensor)


def modern_by_hand(image: Image.Image, auto_augment, erase: float, apply: bool = True):
    """torchvision's reference order with the paper's colour steps, written out: each of
    auto-augment and erasing runs with a seed drawn at its place (``apply=False``: drawn,
    not applied)."""
    crop = v2.RandomResizedCrop(
        CROP, (0.08, 1.0), (3 / 4, 4 / 3), InterpolationMode.BICUBIC, antialias=True
    )
    x = v2.RandomHorizontalFlip(0.5)(crop(image))
    if auto_augment is not None:
        seed = int(torch.randint(0, 2**63 - 1, ()))
        x = seeded(auto_augment, x, seed) if apply else x
    x = F.to_dtype(F.pil_to_tensor(x), torch.float32, scale=True)
    x = F.normalize(Lighting(0.1)(v2.ColorJitter(0.4, 0.4, 0.4)(x)), list(MEAN), list(STD))
    if erase:
        seed = int(torch.randint(0, 2**63 - 1, ()))
        x = seeded(v2.RandomErasing(p=erase), x, seed) if apply else x
    return x.as_subclass(torch.Tensor)


def test_off_by_default_the_paper_pipeline_byte_for_byte(fake_data):
    root, _ = fake_data("imagenet", **IMAGENET)
    image = first_image(root)
    default = module(root).train_set
    assert default.transform is not None and default.accepts_sample_seeds
    off = ModernAugment(None, 9, 0.0)
    assert not off.enabled and off.auto_augment_transform() is None and off.erasing() is None
    for seed in SEEDS[:3]:
        expected = seeded(paper_by_hand, image, seed)
        assert torch.equal(seeded(default.transform, image, seed), expected)
        assert torch.equal(seeded(train_transform(CROP, off), image, seed), expected)
    # the device path's workers draw exactly what they drew before, and no seeds
    for seed in SEEDS[:3]:
        today = seeded(lambda _: ParamSampler(CROP).draw(40, 48), None, seed)
        with_off = seeded(lambda _: ParamSampler(CROP, off).draw(40, 48), None, seed)
        assert today[:3] == with_off[:3] and today[4:] == with_off[4:]
        assert torch.equal(today[3], with_off[3]) and today[5:] == (None, None)


@pytest.mark.parametrize(
    ("options", "auto_augment"),
    [
        ({"auto_augment": "ta_wide"}, v2.TrivialAugmentWide(interpolation="bilinear")),
        (
            {"auto_augment": "ra", "ra_magnitude": 20},
            v2.RandAugment(2, 20, interpolation="bilinear"),
        ),
        (
            {"auto_augment": "ta_wide", "random_erase": 0.5},
            v2.TrivialAugmentWide(interpolation="bilinear"),
        ),
    ],
)
def test_modern_pipeline_is_torchvisions_transforms_in_the_reference_order(
    fake_data, options, auto_augment
):
    root, _ = fake_data("imagenet", **IMAGENET)
    image = first_image(root)
    dataset = module(root, **options).train_set
    erase = options.get("random_erase", 0.0)
    changed = 0
    for seed in SEEDS:
        got = dataset[(0, seed)][0]
        assert torch.equal(
            got, seeded(lambda im: modern_by_hand(im, auto_augment, erase), image, seed)
        )
        assert torch.equal(got, dataset[(0, seed)][0])  # the image's seed decides it all
        plain = seeded(lambda im: modern_by_hand(im, auto_augment, erase, apply=False), image, seed)
        changed += not torch.equal(got, plain)
    assert changed >= 4  # of 6: TrivialAugmentWide's identity is 1 of its 14 operations


@pytest.mark.parametrize("decode", ["pil", "device"])
def test_evaluation_is_never_augmented(fake_data, decode):
    root, _ = fake_data("imagenet", **IMAGENET)
    plain = module(root, val_size=3, decode=decode)
    modern = module(root, val_size=3, decode=decode, auto_augment="ra", random_erase=1.0)
    for split in ("val_set", "test_set"):
        keys = list(range(3))
        a, b = (getattr(dm, split) for dm in (plain, modern))
        if decode == "device":
            a, b = (
                dm.transform_batch(s.__getitems__(keys), train=False)[0]
                for dm, s in ((plain, a), (modern, b))
            )
        else:
            a, b = (torch.stack([s[k][0] for k in keys]) for s in (a, b))
        assert torch.equal(a, b)


def test_random_erasing_with_p_1_erases_a_rectangle_with_zeros():
    x = torch.rand(3, CROP, CROP) + 1  # no zero anywhere
    erasing = ModernAugment(random_erase=1.0).erasing()
    for seed in SEEDS:
        y = run_seeded(erasing, x, seed)
        erased = (y != x).any(0)
        rows, cols = erased.any(1).nonzero()[:, 0], erased.any(0).nonzero()[:, 0]
        top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        assert erased[top:bottom, left:right].all() and int(erased.sum()) == (bottom - top) * (
            right - left
        )
        assert (y[:, top:bottom, left:right] == 0).all()  # torchvision's value 0
        assert 0.02 * CROP**2 * 0.5 <= int(erased.sum()) <= 0.33 * CROP**2 * 1.5  # 2%-33%, rounded
    assert ModernAugment(random_erase=0.0).erasing() is None  # p = 0: no step at all


@pytest.fixture(scope="module")
def smooth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("smooth")
    write_smooth_imagenet(root, n_classes=2, n_per_class=3, n_val_per_class=1)
    return root


@pytest.mark.parametrize("auto_augment", ["ta_wide", "ra"])
def test_the_device_path_draws_what_the_pil_path_draws(smooth, auto_augment):
    options = {"auto_augment": auto_augment, "ra_magnitude": 15, "random_erase": 1.0}
    pil, device = module(smooth, **options), module(smooth, decode="device", **options)
    keys = [(i, 500 + 3 * i) for i in range(len(pil.train_set))]
    expected = torch.stack([pil.train_set[k][0] for k in keys])
    got, labels = device.transform_batch(device.train_set.__getitems__(keys), train=True)
    assert labels.tolist() == pil.train_set.labels.tolist()
    # the same rectangle erased in every image, exactly
    assert torch.equal((got == 0).all(1), (expected == 0).all(1))
    assert all(bool((expected[i] == 0).all(0).any()) for i in range(len(keys)))
    # the same operations and magnitudes: the pixels differ only as PIL's and torchvision's
    # tensor kernels do. Measured: mean |difference| per image at most 0.042 (median 1e-4);
    # with the auto-augment seeds of other images, at least 0.29 (median 0.65).
    diff = (got - expected).abs()
    assert float(diff.median()) < 0.01 and float(diff.mean((1, 2, 3)).max()) < 0.1
    again, _ = device.transform_batch(device.train_set.__getitems__(keys), train=True)
    assert torch.equal(got, again)


@pytest.mark.parametrize("decode", ["pil", "device"])
def test_a_resumed_epoch_draws_the_same_augmentation(fake_data, decode):
    """A data module restored in the middle of epoch 1 (as from a checkpoint) loads the rest of
    that epoch with exactly the augmentation of the uninterrupted run, whose loader decodes in
    2 worker processes: each image's is drawn from its seed in the epoch order
    (data/resume.py), not from a worker's RNG."""
    root, _ = fake_data("imagenet", **IMAGENET)
    options = {"auto_augment": "ta_wide", "random_erase": 0.5, "decode": decode}

    def batches(dm: ImageNetDataModule) -> list[torch.Tensor]:
        return [dm.transform_batch(b, train=True)[0] for b in dm.train_dataloader()]

    whole = module(root, num_workers=2, **options)
    whole.load_state_dict({"progress": {"epoch": 1, "batches": 0, "total": 3}})
    resumed = module(root, **options)
    resumed.load_state_dict({"progress": {"epoch": 1, "batches": 1, "total": 4}})
    expected, got = batches(whole), batches(resumed)
    assert len(expected) == 3 and len(got) == 2
    for a, b in zip(expected[1:], got, strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(expected[0], expected[1])


@pytest.mark.gpu
def test_the_modern_augmentations_on_a_gpu_match_the_cpu(smooth):
    """torchvision's v2 transforms on uint8 CUDA images, seeded on the host: the same
    operations as on the CPU (measured on the CPU against PIL: at most 0.042 per image)."""
    options = {"auto_augment": "ta_wide", "random_erase": 1.0, "decode": "device"}
    dm = module(smooth, **options)
    keys = [(i, 500 + 3 * i) for i in range(len(dm.train_set))]
    on_cpu, _ = dm.transform_batch(dm.train_set.__getitems__(keys), train=True)
    on_gpu, _ = dm.transform_batch(dm.train_set.__getitems__(keys).to("cuda"), train=True)
    assert on_gpu.device.type == "cuda"
    on_gpu = on_gpu.cpu()
    assert torch.equal((on_gpu == 0).all(1), (on_cpu == 0).all(1))
    assert float((on_gpu - on_cpu).abs().mean((1, 2, 3)).max()) < 0.1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"auto_augment": "trivial"}, "data.auto_augment='trivial': expected 'ta_wide' (Trivial"),
        ({"auto_augment": "ra", "ra_magnitude": 31}, "data.ra_magnitude=31: expected 0 to 30"),
        ({"ra_magnitude": -1}, "data.ra_magnitude=-1: expected 0 to 30"),
        ({"ra_magnitude": 2.5}, "data.ra_magnitude=2.5: expected a whole number from 0 to 30"),
        ({"random_erase": 1.5}, "data.random_erase=1.5: expected a probability from 0 to 1"),
        ({"random_erase": -0.1}, "data.random_erase=-0.1: expected a probability from 0 to 1"),
    ],
)
@pytest.mark.parametrize("decode", ["pil", "device"])
def test_bad_values_are_one_clear_error(tmp_path, options, message, decode):
    with pytest.raises(ValueError) as err:
        ImageNetDataModule(data_dir=str(tmp_path), decode=decode, **options)
    assert str(err.value).startswith(message)


# --- through the CLI ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "extra", "code", "message"),
    [
        (
            "densenet_lit.data.ImageNetDataModule",
            ["--data.init_args.ra_magnitude", "31"],
            1,
            "error: data.ra_magnitude=31: expected 0 to 30 (RandAugment has 31 magnitude bins",
        ),
        (
            "densenet_lit.data.CIFAR10DataModule",
            ["--data.init_args.auto_augment", "ta_wide"],
            2,
            "'auto_augment' is an option of ImageNetDataModule, not of CIFAR10DataModule: "
            "leave it out, or use that data module (data.class_path "
            "densenet_lit.data.ImageNetDataModule).",
        ),
    ],
)
def test_the_cli_says_a_bad_augmentation_in_one_line(
    run_args, tmp_path, capsys, monkeypatch, data, extra, code, message
):
    from densenet_lit.cli import main
    from densenet_lit.cli.errors import TRACEBACK_ENV

    monkeypatch.delenv(TRACEBACK_ENV, raising=False)
    args = run_args(*extra, data=data, data_init={"data_dir": str(tmp_path)}, batch_size=4)
    with pytest.raises(SystemExit) as stopped:
        main(args)
    assert stopped.value.code == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and "Did you mean" not in err
