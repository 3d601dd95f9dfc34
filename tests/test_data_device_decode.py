"""ImageNet's device path (``decode: device``): bytes in the workers, decoding and the
fb.resnet.torch augmentation on the device, against the PIL path as the reference; files
the device decoder refuses; exact resumption; any folder-of-classes data set."""

from __future__ import annotations

import io
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_args import IMAGENET_RESUME_DATA, imagenet_resume_args
from lightning.pytorch import LightningModule, Trainer
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F
from weights import assert_same_weights, final_weights

from densenet_lit.data import CorruptDataError, DataError, ImageNetDataModule
from densenet_lit.data import device_decode as dd
from densenet_lit.data import encoded as worker_side
from densenet_lit.data.encoded import AugmentParams, EncodedBatch, jpeg_size
from densenet_lit.data.pil_pipeline import MEAN, STD, Lighting
from densenet_lit.data.synthetic import (
    UNUSUAL_IMAGES,
    smooth_pixels,
    write_smooth_imagenet,
    write_tiny_imagenet,
    write_unusual_images,
)

# Largest |device - PIL| difference allowed, in normalised units (one level of 255 is about
# 0.017): the decoders agree bit for bit on the CPU, but PIL resizes with uint8 arithmetic
# (rounding and clamping between its two passes) and the device path in float, as torchvision
# does on a GPU. Measured on these smooth pictures: at most 0.042 in training (the jitter
# amplifies by up to 1.4 per step), 0.0175 in evaluation, a mean below 0.0035 per batch.
TOLERANCE = 0.1
MEAN_TOLERANCE = 0.006


def module(root: Path, decode: str, **kw) -> ImageNetDataModule:
    kw = {"batch_size": 4, "train_crop": 32, "eval_resize": 36, "eval_crop": 32, **kw}
    return ImageNetDataModule(data_dir=str(root), num_workers=0, decode=decode, **kw)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Smooth pictures in 2 classes, plus a CMYK JPEG, a grayscale JPEG and a PNG named
    .JPEG in one training and one validation class."""
    root = tmp_path_factory.mktemp("photos")
    classes = write_smooth_imagenet(root, n_classes=2, n_per_class=6, n_val_per_class=3)
    write_unusual_images(root / "train" / classes[1])
    write_unusual_images(root / "val" / classes[0], seed=1)
    return root


def test_decode_must_be_pil_or_device(tmp_path):
    with pytest.raises(ValueError, match=r"data.decode='gpu': expected 'pil' .* or 'device'"):
        ImageNetDataModule(data_dir=str(tmp_path), decode="gpu")


def encoded(image: Image.Image, **save) -> memoryview:
    buffer = io.BytesIO()
    image.save(buffer, **save)
    return memoryview(buffer.getvalue())


def test_the_frame_header_tells_what_the_device_decoder_reads():
    image = Image.fromarray(smooth_pixels(np.random.default_rng(0), (30, 40)))
    assert jpeg_size(encoded(image, format="JPEG")) == (30, 40)
    assert jpeg_size(encoded(image, format="JPEG", progressive=True)) == (30, 40)
    big_icc = encoded(image, format="JPEG", icc_profile=b"x" * 70_000)  # segments before SOF
    assert jpeg_size(big_icc) == (30, 40)
    assert jpeg_size(encoded(image.convert("L"), format="JPEG")) == "a grayscale JPEG"
    assert jpeg_size(encoded(image.convert("CMYK"), format="JPEG")) == "a CMYK JPEG"
    assert jpeg_size(encoded(image, format="PNG")) == "a PNG file"
    assert jpeg_size(encoded(image, format="JPEG")[:20]).startswith("a JPEG without")
    assert jpeg_size(memoryview(b"")) == "not a JPEG file"


# --- the same result as the PIL path ---------------------------------------------------------
def fixed_params() -> tuple[list[list[int]], AugmentParams]:
    boxes = [[3, 5, 40, 50], [0, 0, 60, 80], [10, 30, 20, 25]]
    params = AugmentParams(
        boxes=torch.tensor(boxes),
        jitter=torch.tensor([[1.4, 0.6, 1.3], [0.7, 1.35, 0.65], [1.1, 1.2, 0.9]]),
        order=torch.tensor([[2, 0, 1], [1, 2, 0], [0, 1, 2]]),
        alpha=torch.tensor([[0.1, -0.2, 0.05], [-0.1, 0.0, 0.2], [0.0, 0.1, -0.1]]),
        flip=torch.tensor([True, False, True]),
    )
    return boxes, params


def reference(image: Image.Image, box, factors, order, alpha, flip, size: int) -> torch.Tensor:
    """The PIL path's operations, one image, with the given parameters."""
    x = F.pil_to_tensor(F.resized_crop(image, *box, [size, size], InterpolationMode.BICUBIC))
    x = F.to_dtype(x, torch.float32, scale=True)
    adjust = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation)
    for op in order:
        x = adjust[op](x, float(factors[op]))
    lighting = Lighting()
    x = x + (lighting.eigvec @ (alpha * lighting.eigval)).view(3, 1, 1)
    if flip:
        x = F.horizontal_flip(x)
    return F.normalize(x, list(MEAN), list(STD))


def test_fixed_parameters_give_the_pil_result():
    rng = np.random.default_rng(3)
    pictures = [Image.fromarray(smooth_pixels(rng, (60, 80))) for _ in range(3)]
    boxes, params = fixed_params()
    expected = torch.stack(
        [
            reference(p, b, f, o, a, fl, 32)
            for p, b, f, o, a, fl in zip(
                pictures,
                boxes,
                params.jitter,
                params.order.tolist(),
                params.alpha,
                params.flip,
                strict=True,
            )
        ]
    )
    decoded = [F.pil_to_tensor(p) for p in pictures]
    got = dd.augment(list(decoded), params, 32)  # augment empties the list it is given
    diff = (got - expected).abs()
    assert got.shape == (3, 3, 32, 32)
    assert float(diff.max()) <= TOLERANCE and float(diff.mean()) <= MEAN_TOLERANCE
    # the batched colour operations alone equal torchvision's, image by image
    crops = dd.crop_resize_flip(decoded, boxes, [False] * 3, 32).float().mul_(1 / 255)
    jittered = dd.color_jitter(crops.clone(), params.jitter, params.order)
    adjust = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation)
    for i in range(3):
        one = crops[i]
        for op in params.order[i].tolist():
            one = adjust[op](one, float(params.jitter[i, op]))
        assert torch.allclose(jittered[i], one, atol=1e-5), i


@pytest.mark.parametrize("split", ["train", "test"])
def test_same_seeds_give_the_pil_path_images(photos, split):
    """Every image (the CMYK, grayscale and PNG files too) with the augmentation the PIL path
    draws for the same seed: the workers draw the same numbers."""
    pil, device = module(photos, "pil"), module(photos, "device")
    pil.setup("fit"), device.setup("fit")
    dataset = {"train": device.train_set, "test": device.test_set}[split]
    reference_set = {"train": pil.train_set, "test": pil.test_set}[split]
    keys = [(i, 1000 + 7 * i) for i in range(len(dataset))] if split == "train" else None
    keys = keys or list(range(len(dataset)))
    expected = torch.stack([reference_set[k][0] for k in keys])
    images, labels = device.transform_batch(dataset.__getitems__(keys), train=split == "train")
    assert (
        labels.tolist()
        == reference_set.labels[[k[0] if split == "train" else k for k in keys]].tolist()
    )
    diff = (images - expected).abs()
    assert float(diff.max()) <= TOLERANCE and float(diff.mean()) <= MEAN_TOLERANCE
    assert sorted(Path(p).name for p, _ in device.cpu_decoded) == sorted(UNUSUAL_IMAGES)


# --- files the device decoder refuses --------------------------------------------------------
class Pooled(LightningModule):
    """The smallest trainable model: a linear layer on each image's mean colour."""

    def __init__(self, classes: int):
        super().__init__()
        self.fc = torch.nn.Linear(3, classes)
        self.seen = 0

    def training_step(self, batch, _):
        images, labels = batch
        self.seen += len(labels)
        return torch.nn.functional.cross_entropy(self.fc(images.mean((2, 3))), labels)

    def validation_step(self, batch, _):
        self.seen += len(batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_refused_files_are_decoded_on_the_cpu_with_one_warning(photos, tmp_path):
    dm = module(photos, "device", batch_size=3)
    dm.num_workers = 1  # the files are recognised in a worker process
    model = Pooled(dm.num_classes)
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, datamodule=dm)
    # 15 training images (5 batches of 3) and 9 validation images in each of two epochs
    assert trainer.global_step == 10 and model.seen == 2 * (15 + 9)
    ours = [str(w.message) for w in caught if "decode=device" in str(w.message)]
    assert len(ours) == 1, ours
    assert "decode=device: 12 images (6 files) were not readable" in ours[0]  # 2 x (3 + 3)
    assert "a CMYK JPEG" in ours[0] and "a grayscale JPEG" in ours[0] and "a PNG file" in ours[0]
    assert not dm.cpu_decoded  # counted once, then cleared


def test_a_file_the_decoder_fails_on_is_decoded_with_pil(photos, monkeypatch):
    dm = module(photos, "device")
    dm.setup("test")
    names = [Path(p.decode()).name for p in dm.test_set.relpaths]
    keys = [i for i, name in enumerate(names) if name not in UNUSUAL_IMAGES][:4]
    expected, _ = dm.transform_batch(dm.test_set.__getitems__(keys), train=False)
    batch = dm.test_set.__getitems__(keys)
    bad = batch.data[batch.offsets[1] : batch.offsets[2]].clone()
    decode = dd.decode_jpegs

    def refuse_one(images, device):
        if any(torch.equal(image, bad) for image in images):
            raise RuntimeError("nvjpeg: unsupported chroma subsampling")
        return decode(images, device)

    monkeypatch.setattr(dd, "decode_jpegs", refuse_one)
    dm.cpu_decoded.clear()
    images, _ = dm.transform_batch(batch, train=False)
    assert torch.allclose(images, expected, atol=TOLERANCE)
    refused = [(path, why) for path, why in dm.cpu_decoded if "refused" in why]
    assert refused == [
        (batch.paths[1], "refused by the decoder (nvjpeg: unsupported chroma subsampling)")
    ]


def test_a_corrupt_file_is_named(tmp_path):
    write_smooth_imagenet(tmp_path, n_classes=1, n_per_class=1, n_val_per_class=3)
    bad = sorted((tmp_path / "val").rglob("*.JPEG"))[1]
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])  # the frame header is intact, the scan is not
    dm = module(tmp_path, "device")
    dm.setup("test")
    with pytest.raises(CorruptDataError) as err:
        dm.transform_batch(next(iter(dm.test_dataloader())), train=False)
    assert str(bad) in str(err.value)


# --- memory -----------------------------------------------------------------------------------
def test_the_encoded_bytes_are_held_once(photos, monkeypatch):
    """Each file is read straight into the batch's one buffer (shared memory from a worker);
    pinning and the transfer to the device leave that buffer where it is."""
    dm = module(photos, "device", batch_size=4)
    dm.setup("fit")
    loader = DataLoader(
        dm.train_set, batch_size=4, num_workers=1, collate_fn=dm.collate_fn(), shuffle=False
    )
    batch = next(iter(loader))
    assert isinstance(batch, EncodedBatch)
    files = b"".join(Path(p).read_bytes() for p in batch.paths)
    assert batch.data.numel() == len(files) and batch.data.numpy().tobytes() == files
    # in a worker, the buffer is in shared memory before the files are read into it (else
    # sending it would copy it there, while the worker still holds it)
    monkeypatch.setattr(worker_side, "get_worker_info", lambda: "a worker")
    data, offsets = worker_side.read_files(batch.paths)
    assert data.is_shared() and offsets == batch.offsets and torch.equal(data, batch.data)
    assert batch.to("cpu").data is batch.data
    pinned = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda t: pinned.append(t) or t.clone())
    copy = batch.pin_memory()
    assert copy.data is batch.data and all(t is not batch.data for t in pinned)
    assert any(t is batch.labels for t in pinned) and copy.labels is not batch.labels


# --- exact resumption --------------------------------------------------------------------------
BATCHES = 6  # 24 training images in batches of 4


@pytest.mark.slow
def test_the_device_path_resumes_exactly_and_independently_of_workers(fake_data, tmp_path):
    """As the PIL path (tests/test_fault_tolerance.py): 2 workers equal none, and a run cut in
    the middle of epoch 1 and resumed equals the uninterrupted one."""
    from densenet_lit.callbacks import Preempted
    from densenet_lit.cli import run  # here: the GPU tests of this file run without jsonargparse

    data, _ = fake_data("imagenet", **IMAGENET_RESUME_DATA)
    runs = tmp_path / "runs"

    def device_args(name: str, workers: int, *extra: str) -> list[str]:
        return imagenet_resume_args(runs, data, name, workers, *extra, decode="device")

    two = run(device_args("two", 2))
    assert two.trainer.global_step == 2 * BATCHES
    assert_same_weights(final_weights(run(device_args("none", 0))), final_weights(two))
    cut = BATCHES + 2
    signals = ["--trainer.callbacks+=run_probes.SignalAt"]
    signals += ["--trainer.callbacks.signals", f"{{{cut}: SIGTERM}}"]
    with pytest.raises(Preempted) as stopped:
        run(device_args("cut", 2, *signals))
    saved = torch.load(stopped.value.ckpt_path, map_location="cpu", weights_only=False)
    assert saved["global_step"] == cut
    resumed = run(device_args("cut", 2, "--ckpt_path", "last"))
    assert resumed.trainer.global_step == 2 * BATCHES
    assert_same_weights(final_weights(resumed), final_weights(two))


# --- any folder-of-classes data set ---------------------------------------------------------
@pytest.mark.parametrize("decode", ["pil", "device"])
def test_num_classes_is_the_number_of_class_folders(fake_data, decode):
    root, classes = fake_data("imagenet", n_classes=10, n_per_class=1, n_val_per_class=1)
    dm = module(root, decode)
    assert dm.num_classes == 10  # known before setup, for the model's classifier
    dm.setup("fit")
    assert dm.classes == classes and sorted(dm.train_set.labels.tolist()) == list(range(10))


def test_tiny_imagenet_train_layout_and_a_val_laid_out_otherwise(tmp_path):
    classes = write_tiny_imagenet(tmp_path, n_classes=200, n_per_class=1, n_val=6)
    dm = module(tmp_path, "device")
    assert dm.num_classes == 200
    with pytest.raises(DataError) as err:
        dm.setup("fit")
    msg = str(err.value)
    assert "same class folders (200 in train/, 1 in val/)" in msg
    assert "val_annotations.txt" in msg and "Tiny-ImageNet" in msg and str(tmp_path) in msg
    shutil.rmtree(tmp_path / "val")
    write_tiny_imagenet(tmp_path / "sorted", n_classes=200, n_val=200, sorted_val=True)
    shutil.move(tmp_path / "sorted" / "val", tmp_path / "val")
    dm = module(tmp_path, "device")
    dm.setup("fit")
    assert dm.classes == classes and len(dm.train_set) == 200 and len(dm.test_set) == 200
    assert dm.train_set.relpaths[0].decode() == f"{classes[0]}/images/{classes[0]}_0.JPEG"


# --- on a GPU -------------------------------------------------------------------------------
@pytest.mark.gpu
def test_cuda_decoding_matches_the_cpu(photos):
    dm = module(photos, "device")
    dm.setup("fit")
    keys = [(i, 500 + i) for i in range(len(dm.train_set))]
    on_cpu, labels = dm.transform_batch(dm.train_set.__getitems__(keys), train=True)
    batch = dm.train_set.__getitems__(keys).to("cuda")
    on_gpu, gpu_labels = dm.transform_batch(batch, train=True)
    assert on_gpu.device.type == "cuda" and torch.equal(gpu_labels.cpu(), labels)
    diff = (on_gpu.cpu() - on_cpu).abs()
    print(f"cuda - cpu: max {float(diff.max()):.4f}, mean {float(diff.mean()):.5f}")
    assert float(diff.max()) <= TOLERANCE and float(diff.mean()) <= MEAN_TOLERANCE


@pytest.mark.gpu
def test_device_memory_of_a_batch_of_256_photos(tmp_path):
    """The device path's peak at batch 256 of 500x375 JPEGs, above the float batch it returns
    (docs/benchmarks.md computes 288 MiB; nvJPEG's own buffers are not counted)."""
    from densenet_lit.data.synthetic import write_photo_imagenet

    write_photo_imagenet(tmp_path, n_train=256, n_classes=2)
    dm = ImageNetDataModule(data_dir=str(tmp_path), batch_size=256, num_workers=0, decode="device")
    dm.setup("fit")
    keys = [(i, i) for i in range(256)]
    dm.transform_batch(dm.train_set.__getitems__(keys).to("cuda"), train=True)  # warm-up
    batch = dm.train_set.__getitems__(keys).to("cuda")
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    images, _ = dm.transform_batch(batch, train=True)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    print(
        f"peak {peak / 2**20:.0f} MiB, of which the returned batch {images.nbytes / 2**20:.0f} MiB"
    )
    assert images.shape == (256, 3, 224, 224) and peak < 400 * 2**20
