"""The report's targets: the CIFAR loader and GPU-busy targets judged from the epoch rows, and
the device-decoding target judged only on a GPU (no CUDA call made)."""

from __future__ import annotations

from densenet_lit.bench.config import Settings, model_specs
from densenet_lit.bench.epoch import OURS_PIPELINE
from densenet_lit.bench.loaders import DEVICE_DECODE_PIPELINE
from densenet_lit.bench.report import epoch_section, loader_keeps_up, targets


def test_loader_target_is_judged_by_the_ratio_with_gpu_busy_beside_it():
    assert loader_keeps_up(0.96) is True and loader_keeps_up(0.9) is False
    assert loader_keeps_up(None) is None
    settings = Settings(device="cuda")  # no CUDA call made
    specs = model_specs(quick=False)
    row = {"pipeline": OURS_PIPELINE, "workers": 0, "batch": 64, "batches": 781, "seconds": 10.0}
    row["images_per_s"] = 64 * 781 / 10.0
    # a launch-bound step: the loader keeps up, yet the GPU is busy only 60% of the time
    epochs = [
        {**row, "mode": "fp32", "busy": 0.6, "busy_batches": 20, "vs_step": 0.98},
        {**row, "mode": "fast", "busy": "n/a (profiler start failed)", "vs_step": 0.5},
    ]
    rows = targets({}, epochs, specs, settings)
    assert [r[0].split(" (")[0] for r in rows] == [
        "CIFAR loader never the bottleneck",
        "GPU busy > 95% of a CIFAR epoch",
    ] * 2
    assert "0.98x" in rows[0][1] and rows[0][2] == "met"
    assert rows[1][1].startswith("60.0%") and rows[1][2] == "NOT met"
    assert "0.50x" in rows[2][1] and rows[2][2] == "NOT met"
    assert rows[3][1] == "n/a (profiler start failed)" and rows[3][2] == "n/a"
    table = "\n".join(epoch_section(epochs))
    assert "60.0% (20 batches)" in table and "n/a (profiler start failed)" in table
    assert "0.98x" in table


def test_the_device_decoding_target_is_judged_on_a_gpu():
    specs = model_specs(quick=False)
    pipeline = DEVICE_DECODE_PIPELINE.format(device="GPU")
    row = {"loader": "ImageNet", "workers": 0, "batch": 64}
    rows = [{**row, "pipeline": pipeline, "images_per_s": ips} for ips in (5200.0, 4100.0)]
    rows.append({**row, "pipeline": "ours: decode + fb.resnet.torch", "images_per_s": 9000.0})
    gpu = targets({}, [], specs, Settings(device="cuda"), rows)
    assert [r[1:] for r in gpu] == [
        ["5,200 img/s (batches of 64)", "met"],
        ["4,100 img/s (batches of 64)", "NOT met"],
    ]
    assert gpu[0][0].startswith("ImageNet JPEG decoding + augmentation on the device >= 5,000")
    cpu = targets({}, [], specs, Settings(device="cpu", quick=True), rows[:1])
    assert cpu[0][2] == "not judged (CPU run; GPU target)"
