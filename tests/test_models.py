"""The network: architectures, parameter counts, weights, features (memory levels:
test_memory_efficient.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torch import nn

from densenet_lit.models import (
    MODEL_NAMES,
    DenseLayer,
    DenseNet,
    Transition,
    build_model,
    densenet121,
    densenet161,
    densenet_cifar,
    densenet_imagenet,
    load_torchvision_weights,
)
from densenet_lit.models.pretrained import torchvision_key
from densenet_lit.models.spec import network_spec
from densenet_lit.models.summary import count_macs, count_parameters
from densenet_lit.paper import CIFAR_MODELS, IMAGENET_MODELS

# Exact counts of our networks (10 and 100 classes). Each rounds to the paper's figure.
CIFAR_PARAMS = {
    "densenet_40_12": (1_019_722, 1_060_132),
    "densenet_100_12": (6_979_642, 7_084_852),
    "densenet_100_24": (27_249_082, 27_457_972),
    "densenet_bc_100_12": (769_162, 800_032),
    "densenet_bc_250_24": (15_324_406, 15_480_556),
    "densenet_bc_190_40": (25_624_430, 25_821_620),
    "wide_densenet_bc_40_36": (1_542_682, 1_578_412),
    "wide_densenet_bc_40_48": (2_733_130, 2_780_740),
    "wide_densenet_bc_40_60": (4_261_690, 4_321_180),
}
# torchvision's densenet121/169/201/161 have these counts too; the tech report's models have
# no torchvision twin. DenseNet-cosine-264 (k=48) is the report's "73M parameters" model.
IMAGENET_PARAMS = {
    "densenet121": 7_978_856,
    "densenet169": 14_149_480,
    "densenet201": 20_013_928,
    "densenet161": 28_681_000,
    "densenet264": 33_337_704,
    "densenet264_cosine": 33_337_704,
    "densenet232": 55_570_984,
    "densenet264cosine_k48": 72_686_632,
}


@pytest.mark.parametrize("row", CIFAR_MODELS, ids=lambda r: r.key)
def test_cifar_parameter_counts_match_paper(row):
    c10, c100 = CIFAR_PARAMS[row.key]
    m10 = densenet_cifar(**row.model_kwargs, num_classes=10)
    m100 = densenet_cifar(**row.model_kwargs, num_classes=100)
    assert count_parameters(m10) == c10
    assert count_parameters(m100) == c100
    assert round(c10 / 1e6, 1) == row.params_m
    # 90 more classes add 90 weight rows and 90 biases, nothing else.
    assert c100 - c10 == 90 * (m10.num_features + 1)


@pytest.mark.parametrize("row", IMAGENET_MODELS, ids=lambda r: r.key)
def test_imagenet_parameter_counts(row):
    count = count_parameters(build_model(row.arch, **row.model_kwargs))
    assert count == IMAGENET_PARAMS[row.key]
    if row.params_m is not None:
        assert round(count / 1e6, 1) == row.params_m
    if hasattr(torchvision.models, row.arch):
        assert count == count_parameters(getattr(torchvision.models, row.arch)())


def test_densenet_imagenet_builds_the_named_networks_from_their_blocks():
    torch.manual_seed(0)
    named = densenet161(num_classes=10)
    torch.manual_seed(0)
    built = densenet_imagenet((6, 12, 36, 24), 48, num_classes=10)
    assert named.features.conv0.out_channels == built.features.conv0.out_channels == 96
    assert named.state_dict().keys() == built.state_dict().keys()
    for key, value in named.state_dict().items():
        assert torch.equal(built.state_dict()[key], value), key
    deep = densenet_imagenet([6, 12, 48, 48], 48)  # DenseNet-232, as a config gives it
    blocks = [len(m) for n, m in deep.features.named_children() if n.startswith("denseblock")]
    assert blocks == [6, 12, 48, 48] and deep.growth_rate == 48
    # two convolutions per layer, the stem's, three transitions': "232", counted as for 264
    assert 2 * sum(blocks) + 4 == 232


@pytest.mark.parametrize(
    ("arch", "args", "error"),
    [
        ("densenet_imagenet", {"growth_rate": 48}, "needs model.block_config: the layers"),
        ("densenet_imagenet", {}, "needs model.block_config and model.growth_rate"),
        (
            "densenet_imagenet",
            {"block_config": [6, 12], "growth_rate": 8, "depth": 121},
            "is a DenseNet-BC sized by model.block_config and model.growth_rate, so "
            "model.depth=121 contradicts it",
        ),
        (
            "densenet121",
            {"block_config": [6, 12, 24, 16]},
            r"fixes its depth, growth rate and block structure, so model.block_config=\[6, 12, "
            r"24, 16\] contradicts it. Remove it, or use model.arch='densenet_cifar' .* or "
            "model.arch='densenet_imagenet' for an ImageNet network",
        ),
        (
            "densenet_cifar",
            {"block_config": [1, 1]},
            "has three dense blocks whose length follows from model.depth, so "
            r"model.block_config=\[1, 1\] contradicts it",
        ),
    ],
)
def test_network_arguments_that_contradict_the_arch_are_clear_errors(arch, args, error):
    with pytest.raises(ValueError, match=f"model.arch='{arch}' {error}"):
        network_spec({"arch": arch, **args})


def test_model_key_of_densenet_imagenet():
    blocks = {"arch": "densenet_imagenet", "block_config": [6, 12, 48, 48], "growth_rate": 48}
    assert network_spec(blocks).key == "densenet_imagenet_6_12_48_48_k48"
    blocks.update(block_config=[6, 12, 24, 16], growth_rate=32)
    assert network_spec(blocks).key == "densenet121"
    spec = network_spec({**blocks, "block_config": [2, 2], "growth_rate": 4, "num_classes": 3})
    net = spec.build()
    assert net.block_config == (2, 2) and net.classifier.out_features == 3


def test_dense_block_adds_growth_rate_channels_per_layer():
    model = densenet_cifar(40, 12, bottleneck=False, compression=1.0)
    x = torch.randn(2, 3, 32, 32)
    blocks = model.block_features(x)
    # 16 stem channels, 12 layers of k=12 per block, theta = 1.
    assert [b.shape[1] for b in blocks] == [16 + 144, 160 + 144, 304 + 144]
    assert [b.shape[-1] for b in blocks] == [32, 16, 8]


def test_bc_transitions_compress_by_half_and_floor():
    model = densenet_cifar(100, 12)  # 24 stem, 16 bottleneck layers per block
    convs = [m.conv for m in model.modules() if isinstance(m, Transition)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(216, 108), (300, 150)]
    assert model.num_features == 150 + 16 * 12
    odd = DenseNet((1, 1), growth_rate=3, stem_channels=4, imagenet_stem=False, compression=0.5)
    transition = next(m for m in odd.modules() if isinstance(m, Transition))
    assert transition.conv.out_channels == math.floor(0.5 * 7) == 3


def test_imagenet_stem_and_block_resolutions():
    model = densenet121()
    blocks = model.block_features(torch.randn(1, 3, 224, 224))
    assert [b.shape[-1] for b in blocks] == [56, 28, 14, 7]
    assert model.features.conv0.kernel_size == (7, 7) and model.features.conv0.out_channels == 64
    assert isinstance(model.features.pool0, nn.MaxPool2d)


def test_layer_structure_of_bottleneck_and_plain_layers():
    layer = DenseLayer(20, growth_rate=12, bottleneck=True)
    assert layer.conv1.kernel_size == (1, 1) and layer.conv1.out_channels == 48
    assert layer.conv2.kernel_size == (3, 3) and layer.conv2.out_channels == 12
    plain = DenseLayer(20, growth_rate=12, bottleneck=False)
    assert plain.conv1.kernel_size == (3, 3) and plain.conv1.out_channels == 12
    assert not hasattr(plain, "conv2")
    assert all(m.bias is None for m in layer.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize(
    ("depth", "bottleneck", "nearest"),
    [(101, True, "100 or 106"), (41, False, "40 or 43"), (3, True, "10"), (99, True, "94 or 100")],
)
def test_invalid_depth_names_the_nearest_valid_depths(depth, bottleneck, nearest):
    other = "3\\*n \\+ 4" if bottleneck else "6\\*n \\+ 4"  # the other variant's rule
    with pytest.raises(
        ValueError, match=rf"depth={depth}.*Nearest valid depths: {nearest} \(.*{other}"
    ):
        densenet_cifar(depth, 12, bottleneck=bottleneck)


@pytest.mark.parametrize(
    ("make", "smallest"), [(densenet121, 29), (lambda: densenet_cifar(40, 12), 4)]
)
def test_smallest_image_size_is_where_the_forward_pass_starts_to_work(make, smallest):
    net = make().eval()
    assert net.smallest_image_size() == smallest
    assert net.feature_map_size(224 if smallest == 29 else 32) == (7 if smallest == 29 else 8)
    with torch.no_grad():
        assert net(torch.randn(1, 3, smallest, smallest)).shape == (1, net.classifier.out_features)
        with pytest.raises(RuntimeError):
            net(torch.randn(1, 3, smallest - 1, smallest - 1))


def test_unknown_architecture_lists_the_known_ones():
    with pytest.raises(ValueError, match="arch='densenet999'.*densenet121.*densenet_cifar"):
        build_model("densenet999")
    assert set(MODEL_NAMES) >= {"densenet121", "densenet169", "densenet201", "densenet161"}


@pytest.mark.parametrize("kwargs", [{"compression": 0.0}, {"drop_rate": 1.0}, {"growth_rate": 0}])
def test_bad_hyperparameters_are_rejected(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        DenseNet(**kwargs)


def test_keyword_arguments_pass_through_named_models():
    model = build_model("densenet121", num_classes=7, drop_rate=0.2, memory_efficient=True)
    assert model.classifier.out_features == 7
    assert model.memory_efficient == 1
    drops = [m.p for m in model.modules() if isinstance(m, nn.Dropout)]
    assert drops and set(drops) == {0.2}


def test_dropout_after_every_convolution_but_the_first():
    model = densenet_cifar(10, 4, drop_rate=0.2)  # one bottleneck layer per block
    calls = []  # (module name, input, output) in execution order
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d | nn.Dropout):
            m.register_forward_hook(lambda m, i, o, name=name: calls.append((name, i[0], o)))
    x = torch.randn(4, 3, 32, 32)
    model.train()
    first = model(x)
    convs = [c for c in calls if "conv" in c[0]]
    # stem, 3 layers x 2 convolutions, 2 transitions
    assert len(convs) == 1 + 3 * 2 + 2
    followed = {}
    for (name, _, out), (next_name, next_in, _) in zip(calls, calls[1:], strict=False):
        followed[name] = "drop" in next_name and next_in is out
    assert followed["features.conv0"] is False
    assert [c[0] for c in convs[1:] if not followed.get(c[0])] == []
    assert [m.p for n, m in model.named_modules() if isinstance(m, nn.Dropout)] == [0.2] * 8
    assert not torch.equal(first, model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


def test_he_initialisation_uses_fan_out():
    torch.manual_seed(0)
    model = densenet_cifar(100, 12)
    conv = model.features.denseblock3.denselayer16.conv1  # 1x1, 48 outputs
    expected_std = math.sqrt(2 / (1 * 1 * conv.out_channels))
    assert conv.weight.std().item() == pytest.approx(expected_std, rel=0.05)
    bn = model.features.norm5
    assert torch.equal(bn.weight, torch.ones_like(bn.weight))
    assert torch.equal(bn.bias, torch.zeros_like(bn.bias))
    assert torch.equal(model.classifier.bias, torch.zeros_like(model.classifier.bias))


def test_features_for_transfer_learning():
    model = densenet_cifar(40, 12, bottleneck=False, compression=1.0, num_classes=10)
    x = torch.randn(3, 3, 32, 32)
    model.eval()
    pooled = model.forward_features(x)
    assert pooled.shape == (3, model.num_features) == (3, 448)
    torch.testing.assert_close(model.classifier(pooled), model(x))
    last_block = model.block_features(x)[-1]
    assert last_block.shape == (3, 448, 8, 8)
    head = torch.relu(model.features.norm5(last_block)).mean((2, 3))
    torch.testing.assert_close(head, pooled)


def _to_old_torchvision_names(state: dict) -> dict:
    """Rename keys the way torchvision's published weight files spell them."""
    old = {}
    for key, value in state.items():
        for part in ("norm1", "relu1", "conv1", "norm2", "relu2", "conv2"):
            if f".{part}." in key and "denselayer" in key:
                key = key.replace(f".{part}.", f".{part[:-1]}.{part[-1]}.")
        old[key] = value
    return old


def test_old_torchvision_key_names_are_translated():
    key = "features.denseblock1.denselayer1.norm.1.weight"
    assert torchvision_key(key) == "features.denseblock1.denselayer1.norm1.weight"
    assert torchvision_key("module._orig_mod.classifier.bias") == "classifier.bias"
    assert torchvision_key("features.transition1.norm.weight") == "features.transition1.norm.weight"


@pytest.mark.parametrize("arch", ["densenet121", "densenet169", "densenet201", "densenet161"])
def test_torchvision_weights_give_the_same_logits(arch, tmp_path):
    torch.manual_seed(0)
    reference = getattr(torchvision.models, arch)().eval()
    for m in reference.modules():  # non-trivial BN statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / f"{arch}.pth"
    torch.save(_to_old_torchvision_names(reference.state_dict()), path)
    ours = load_torchvision_weights(build_model(arch), path).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x))


def test_loading_weights_of_another_model_fails_clearly():
    state = torchvision.models.densenet169().state_dict()
    with pytest.raises(ValueError, match="do not fit the model.*same architecture"):
        load_torchvision_weights(densenet121(), state)


def test_loading_a_corrupt_weight_file_fails_clearly(tmp_path):
    path = tmp_path / "densenet121.pth"
    torch.save(densenet121().state_dict(), path)
    path.write_bytes(path.read_bytes()[:1000])  # a truncated download
    with pytest.raises(ValueError, match=r"densenet121\.pth.*truncated or corrupt"):
        load_torchvision_weights(densenet121(), path)
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        load_torchvision_weights(densenet121(), tmp_path / "nowhere.pth")


def test_macs_of_densenet121_and_a_hand_counted_network():
    assert count_macs(densenet121(), (3, 224, 224)) == 2_834_161_664
    tiny = DenseNet(
        (1,), growth_rate=2, stem_channels=4, imagenet_stem=False, bottleneck=False, num_classes=3
    )
    # stem 3x3: 4*3*9 per pixel; layer 3x3: 2*4*9 per pixel; 8x8 pixels; classifier 6*3.
    assert count_macs(tiny, (3, 8, 8)) == 64 * (4 * 3 * 9 + 2 * 4 * 9) + 6 * 3


def test_channels_last_gives_the_same_outputs():
    torch.manual_seed(0)
    model = densenet_cifar(16, 6).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_torch_compile_gives_the_same_outputs():
    torch.manual_seed(0)
    model = densenet_cifar(10, 4).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        compiled = torch.compile(model)
        torch.testing.assert_close(compiled(x), expected, rtol=1e-4, atol=1e-5)


def test_the_analysis_rebuilds_densenet_imagenet_from_a_runs_arguments():
    from densenet_lit.analysis.checkpoint import network_spec

    hparams = {"arch": "densenet_imagenet", "block_config": [6, 12, 48, 48], "growth_rate": 48}
    hparams |= {"lr": 0.1, "memory_efficient": 3, "num_classes": 1000, "depth": None}
    arch, kwargs = network_spec(hparams)
    assert (arch, kwargs) == (
        "densenet_imagenet",
        {"block_config": [6, 12, 48, 48], "growth_rate": 48, "num_classes": 1000},
    )
    assert count_parameters(build_model(arch, **kwargs)) == IMAGENET_PARAMS["densenet232"]
