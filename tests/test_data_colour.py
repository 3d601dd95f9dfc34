"""The paper's colour augmentation of class-folder training images as config values
(``color_jitter``, ``lighting``): 0 leaves the step out on both decode paths, drawing no random
numbers; another strength draws its factors in its range; bad values are one clear error. The
defaults (the paper's pipeline, byte for byte) are checked by test_data_modern_augment.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as F

from densenet_lit.data import ImageNetDataModule
from densenet_lit.data.encoded import ParamSampler
from densenet_lit.data.pil_pipeline import MEAN, STD, ColourAugment, Lighting
from densenet_lit.data.synthetic import write_smooth_imagenet

# fake_data("imagenet", **IMAGENET): 3 classes of 4 training and 2 validation images, 40x48
IMAGENET = {"n_classes": 3, "n_per_class": 4, "n_val_per_class": 2}
CROP = 32
SEEDS = [21, 22, 23, 24]


def module(root: Path, **kw) -> ImageNetDataModule:
    kw = {"batch_size": 4, "train_crop": CROP, "eval_resize": 36, "eval_crop": CROP, **kw}
    dm = ImageNetDataModule(data_dir=str(root), **{"num_workers": 0, **kw})
    dm.setup("fit")
    return dm


def seeded(fn, seed: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return fn()


def crop_step() -> v2.RandomResizedCrop:
    return v2.RandomResizedCrop(
        CROP, (0.08, 1.0), (3 / 4, 4 / 3), InterpolationMode.BICUBIC, antialias=True
    )


def by_hand(image: Image.Image, colour: list, erase: float = 0.0) -> torch.Tensor:
    """Crop, to float, the given colour steps, flip, normalise (the paper's order); with
    ``erase``, the modern order: crop, flip, to float, colour steps, normalise, erasing."""
    x = crop_step()(image)
    if erase:
        x = v2.RandomHorizontalFlip(0.5)(x)
    x = F.to_dtype(F.pil_to_tensor(x), torch.float32, scale=True)
    for step in colour:
        x = step(x)
    if not erase:
        x = v2.RandomHorizontalFlip(0.5)(x)
    x = F.normalize(x, list(MEAN), list(STD))
    if erase:
        seed = int(torch.randint(0, 2**63 - 1, ()))
        x = seeded(lambda: v2.RandomErasing(p=erase)(x), seed)
    return x.as_subclass(torch.Tensor)


@pytest.mark.parametrize(
    ("jitter", "lighting", "steps"),
    [
        (0, 0, lambda: []),
        (0, 0.1, lambda: [Lighting(0.1)]),
        (0.4, 0, lambda: [v2.ColorJitter(0.4, 0.4, 0.4)]),
        (0.2, 0.3, lambda: [v2.ColorJitter(0.2, 0.2, 0.2), Lighting(0.3)]),
    ],
)
@pytest.mark.parametrize("erase", [0.0, 1.0])
def test_the_pil_path_runs_exactly_the_steps_that_are_on(fake_data, jitter, lighting, steps, erase):
    root, _ = fake_data("imagenet", **IMAGENET)
    image = Image.open(sorted((root / "train").rglob("*.JPEG"))[0]).convert("RGB")
    dataset = module(root, color_jitter=jitter, lighting=lighting, random_erase=erase).train_set
    outputs = []
    for seed in SEEDS:
        got = dataset[(0, seed)][0]
        assert torch.equal(got, seeded(lambda: by_hand(image, steps(), erase), seed))
        outputs.append(got)
    assert not torch.equal(outputs[0], outputs[1])  # the seed still decides crop and flip


def test_steps_that_are_off_draw_no_random_numbers():
    """With both off the workers draw the crop box and the flip only, as the PIL path's crop
    and flip do: the RNG ends where those two draws leave it."""
    for seed in SEEDS:

        def crop_and_flip():
            box = crop_step().make_params([torch.empty(3, 40, 48)])
            flip = bool(torch.rand(1) < 0.5)
            return [box["top"], box["left"], box["height"], box["width"]], flip, torch.rand(1)

        def drawn():
            draw = ParamSampler(CROP, colour=ColourAugment(0, 0)).draw(40, 48)
            return draw, torch.rand(1)

        box, flip, after = seeded(crop_and_flip, seed)
        (got_box, factors, order, alpha, got_flip, *seeds), got_after = seeded(drawn, seed)
        assert (got_box, got_flip) == (box, flip) and torch.equal(got_after, after)
        assert factors is None and order is None and alpha is None and seeds == [None, None]


def test_a_jitter_value_draws_its_factors_in_its_range():
    j = 0.15
    sampler = ParamSampler(CROP, colour=ColourAugment(j, 0.3))
    draws = [seeded(lambda: sampler.draw(40, 48), seed) for seed in range(300)]
    factors = torch.tensor([d[1] for d in draws])  # [300, 3]
    assert float(factors.min()) >= 1 - j and float(factors.max()) <= 1 + j
    # uniform over the range: each factor reaches within 0.02 of both ends
    assert (factors.amin(0) < 1 - j + 0.02).all() and (factors.amax(0) > 1 + j - 0.02).all()
    assert sorted(draws[0][2]) == [0, 1, 2]  # brightness, contrast, saturation in some order
    alphas = torch.stack([d[3] for d in draws])
    assert 0.27 < float(alphas.std()) < 0.33  # lighting 0.3 (900 draws: standard error 0.007)


@pytest.fixture(scope="module")
def smooth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("smooth")
    write_smooth_imagenet(root, n_classes=2, n_per_class=3, n_val_per_class=1)
    return root


OFF = {"color_jitter": 0.0, "lighting": 0.0}


# Measured |device - PIL|: with the colour off, at most 0.0175 = one level of 255 (1/255/0.224
# normalised: the resize arithmetic, PIL's uint8 passes against torchvision's float), mean
# 0.0025; with jitter 0.2 and lighting 0.3, at most 0.024, mean 0.0027.
@pytest.mark.parametrize(
    ("options", "largest", "mean"),
    [
        (OFF, 0.02, 0.004),
        ({**OFF, "random_erase": 1.0}, 0.02, 0.004),
        ({"color_jitter": 0.2, "lighting": 0.3}, 0.05, 0.004),
    ],
)
def test_the_device_path_draws_and_applies_what_the_pil_path_does(smooth, options, largest, mean):
    pil, device = module(smooth, **options), module(smooth, decode="device", **options)
    keys = [(i, 700 + 5 * i) for i in range(len(pil.train_set))]
    expected = torch.stack([pil.train_set[k][0] for k in keys])
    batch = device.train_set.__getitems__(keys).to("cpu")
    off = options["color_jitter"] == 0
    assert (batch.params.jitter is None, batch.params.order is None) == (off, off)
    assert (batch.params.alpha is None) == (options["lighting"] == 0)
    got, labels = device.transform_batch(batch, train=True)
    assert labels.tolist() == pil.train_set.labels.tolist()
    diff = (got - expected).abs()
    assert float(diff.max()) <= largest and float(diff.mean()) <= mean
    if options.get("random_erase"):  # the erasing seeds drawn in step: the same rectangles
        assert torch.equal((got == 0).all(1), (expected == 0).all(1))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"color_jitter": -0.1},
            "data.color_jitter=-0.1: expected a number from 0 (off) to below 1",
        ),
        ({"color_jitter": 1.0}, "data.color_jitter=1.0: expected a number from 0 (off) to below 1"),
        ({"color_jitter": True}, "data.color_jitter=True: expected a number from 0 (off)"),
        ({"color_jitter": float("nan")}, "data.color_jitter=nan: expected a number from 0"),
        ({"lighting": -0.5}, "data.lighting=-0.5: expected a standard deviation of 0 (off) or"),
        ({"lighting": float("inf")}, "data.lighting=inf: expected a standard deviation of 0"),
    ],
)
def test_bad_values_are_one_clear_error(tmp_path, options, message):
    with pytest.raises(ValueError) as err:
        ImageNetDataModule(data_dir=str(tmp_path), **options)
    assert str(err.value).startswith(message)
    assert "the paper's 0." in str(err.value)


def test_the_cli_says_a_bad_value_in_one_line(run_args, tmp_path, capsys, monkeypatch):
    from densenet_lit.cli import main
    from densenet_lit.cli.errors import TRACEBACK_ENV

    monkeypatch.delenv(TRACEBACK_ENV, raising=False)
    args = run_args(
        "--data.init_args.color_jitter",
        "1",
        data="densenet_lit.data.ImageNetDataModule",
        data_init={"data_dir": str(tmp_path)},
        batch_size=4,
    )
    with pytest.raises(SystemExit) as stopped:
        main(args)
    assert stopped.value.code == 1
    err = capsys.readouterr().err
    assert "error: data.color_jitter=1.0: expected a number from 0 (off) to below 1" in err
    assert "Traceback" not in err
