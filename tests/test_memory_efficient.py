"""Memory levels (``memory_efficient``): the same outputs, gradients and batch-norm statistics
as the standard network in every mode a config can ask for, and less memory."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from densenet_lit.models import DenseLayer, DenseNet, authors_memory, densenet_cifar, memory
from densenet_lit.models.memory import LevelCost, activation_bytes, level_table, measure
from densenet_lit.models.memory_efficient import DEEPEST, LEVELS, memory_level

RECOMPUTING = [level for level in LEVELS if level > 0]
STEPS = 2


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny networks run fastest on one thread, and steadiest on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(drop_rate: float = 0.0, bottleneck: bool = True, level: int = 0) -> DenseNet:
    """Two blocks of two layers: the second layer of a block reads a concatenation."""
    torch.manual_seed(0)
    return DenseNet(
        (2, 2),
        growth_rate=4,
        stem_channels=8,
        imagenet_stem=False,
        bottleneck=bottleneck,
        drop_rate=drop_rate,
        num_classes=5,
        memory_efficient=level,
    )


def batches(channels_last: bool = False) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    xs = [torch.randn(4, 3, 16, 16, generator=gen) for _ in range(STEPS)]
    return [x.contiguous(memory_format=torch.channels_last) for x in xs] if channels_last else xs


def train(
    model: nn.Module,
    *,
    level: int = 0,
    compiled: str | None = None,
    bf16: bool = False,
    channels_last: bool = False,
    seed: int = 0,
) -> dict[str, list]:
    """Two SGD steps of ``model`` run at ``level``; the outputs, gradients and final state.

    The global RNG is seeded before each forward pass, so dropout draws the same masks in
    every network of the same layout."""
    model = copy.deepcopy(model)
    model.memory_efficient = level
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = torch.compile(model, backend=compiled) if compiled else model
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    record: dict[str, list] = {"outputs": [], "grads": []}
    for step, x in enumerate(batches(channels_last)):
        torch.manual_seed(seed + step)
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = net(x)
        out.float().square().mean().backward()
        record["outputs"].append(out.detach().float())
        record["grads"].append({n: p.grad.clone() for n, p in model.named_parameters()})
        opt.step()
    record["state"] = [{k: v.clone() for k, v in model.state_dict().items()}]
    return record


def assert_same_training(got: dict, expected: dict, rel: float = 0.0) -> None:
    """Equal outputs, gradients, weights and batch-norm statistics (``num_batches_tracked``
    exactly); ``rel`` > 0 allows rounding differences relative to each tensor's scale."""

    def close(a, b, msg):
        if rel:
            atol = rel * b.abs().max().item()
            torch.testing.assert_close(a, b, rtol=rel, atol=atol, msg=msg)
        else:
            torch.testing.assert_close(a, b, msg=msg)

    for step, (a, b) in enumerate(zip(got["outputs"], expected["outputs"], strict=True)):
        close(a, b, f"output of step {step}")
    for step, (ga, gb) in enumerate(zip(got["grads"], expected["grads"], strict=True)):
        for name in gb:
            close(ga[name], gb[name], f"gradient of {name}, step {step}")
    state, ref = got["state"][0], expected["state"][0]
    assert state.keys() == ref.keys()
    for key, value in ref.items():
        if key.endswith("num_batches_tracked"):
            assert state[key].item() == value.item() == STEPS, key
        else:
            close(state[key].float(), value.float(), key)


_REFERENCES: dict[tuple, dict] = {}


def reference(bf16: bool, channels_last: bool) -> dict:
    """The standard network, eager, in the same precision and layout (computed once)."""
    key = (bf16, channels_last)
    if key not in _REFERENCES:
        _REFERENCES[key] = train(tiny(), bf16=bf16, channels_last=channels_last)
    return _REFERENCES[key]


MODES = [
    pytest.param(compiled, bf16, cl, id=f"{compiled or 'eager'}-{p}-{layout}")
    for compiled in (None, "aot_eager")
    for bf16, p in ((False, "fp32"), (True, "bf16"))
    for cl, layout in ((False, "nchw"), (True, "channels_last"))
]


@pytest.mark.parametrize("level", list(LEVELS))
@pytest.mark.parametrize(("compiled", "bf16", "channels_last"), MODES)
def test_every_mode_trains_like_the_standard_network(level, compiled, bf16, channels_last):
    if compiled is None and level == 0:
        pytest.skip("the reference itself")
    got = train(tiny(), level=level, compiled=compiled, bf16=bf16, channels_last=channels_last)
    expected = reference(bf16, channels_last)
    # bf16 rounds to 8 bits; a compiled graph (and recomputation) may order sums differently
    assert_same_training(got, expected, rel=2e-2 if bf16 else 1e-5)


@pytest.mark.slow
def test_inductor_trains_the_deepest_level_like_the_standard_network():
    got = train(tiny(), level=DEEPEST, compiled="inductor", channels_last=True)
    assert_same_training(got, reference(False, True), rel=1e-4)


@pytest.mark.parametrize("bottleneck", [True, False])
@pytest.mark.parametrize("level", RECOMPUTING)
def test_dropout_draws_the_same_masks_when_recomputed(level, bottleneck):
    """Dropout runs inside the recomputed part at levels 2 and 3: recomputation must draw
    the masks of the forward pass, or the gradients are those of another network."""
    model = tiny(drop_rate=0.2, bottleneck=bottleneck)
    expected = train(model, seed=5)
    got = train(model, level=level, seed=5)
    assert_same_training(got, expected)
    # the masks matter: another seed gives other outputs
    other = train(model, seed=6)
    assert not torch.allclose(other["outputs"][0], expected["outputs"][0])


@pytest.mark.parametrize("level", RECOMPUTING)
def test_cumulative_batch_norm_average_is_updated_once_per_step(level):
    """momentum=None: the running statistics are the plain average over the steps so far."""
    model = tiny()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
    assert_same_training(train(model, level=level), train(model))


@pytest.mark.parametrize("level", RECOMPUTING)
def test_eval_mode_gives_the_standard_outputs_and_gradients(level):
    """In eval mode batch norm uses the running statistics and leaves them alone, with or
    without gradients (the recomputed path runs when an input requires grad)."""
    standard = tiny()
    train(standard)  # move the running statistics away from their initial values
    efficient = copy.deepcopy(standard)
    efficient.memory_efficient = level
    standard.eval()
    efficient.eval()
    before = copy.deepcopy(efficient.state_dict())
    x = batches()[0]
    with torch.no_grad():
        torch.testing.assert_close(efficient(x), standard(x))
    xs, xe = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_s, out_e = standard(xs), efficient(xe)
    torch.testing.assert_close(out_e, out_s)
    out_s.square().sum().backward()
    out_e.square().sum().backward()
    torch.testing.assert_close(xe.grad, xs.grad)
    for (name, ps), pe in zip(standard.named_parameters(), efficient.parameters(), strict=True):
        torch.testing.assert_close(pe.grad, ps.grad, msg=name)
    for key, value in before.items():
        assert torch.equal(efficient.state_dict()[key], value), key


def test_each_level_holds_less_activation_memory():
    """Exact byte counts for DenseNet-BC (L=100, k=12); the deepest level is within the
    authors' most frugal level's 0.30x of the standard network."""
    x = torch.randn(2, 3, 32, 32)
    sizes = []
    for level in LEVELS:
        torch.manual_seed(0)
        sizes.append(activation_bytes(densenet_cifar(100, 12, memory_efficient=level), x))
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes)
    assert sizes[1] < 0.5 * sizes[0]
    assert sizes[DEEPEST] <= 0.30 * sizes[0]


@pytest.mark.parametrize(("value", "level"), [(False, 0), (True, 1), (0, 0), (2, 2), (3, 3)])
def test_memory_efficient_takes_booleans_and_levels(value, level):
    assert memory_level(value) == level
    model = tiny(level=value)
    assert model.memory_efficient == level
    assert {m.memory_efficient for m in model.modules() if isinstance(m, DenseLayer)} == {level}


@pytest.mark.parametrize("value", [4, -1, 1.0, "2", None])
def test_a_bad_memory_level_is_a_clear_error(value):
    message = (
        rf"memory_efficient={value!r}: expected False, True \(level 1\) or a memory level 0 to 3"
    )
    with pytest.raises(ValueError, match=message):
        tiny(level=value)
    with pytest.raises(ValueError, match=message):
        tiny().memory_efficient = value


# ------------------------------------------------------------- SyncBatchNorm over ranks
SYNC_CASES = [(1, False), (2, True), (3, True)]  # (level, bottleneck): every norm recomputed


def sync_layer(bottleneck: bool) -> DenseLayer:
    torch.manual_seed(0)
    return DenseLayer(12, growth_rate=4, bottleneck=bottleneck)


def sync_features(step: int) -> list[torch.Tensor]:
    """The whole batch of a step: a block input (8 channels) and one earlier layer's 4."""
    gen = torch.Generator().manual_seed(10 + step)
    return [torch.randn(8, 8, 6, 6, generator=gen), torch.randn(8, 4, 6, 6, generator=gen)]


def sync_steps(layer: nn.Module, rank: int = 0, world: int = 1) -> dict[str, list]:
    """Two steps of ``layer`` on rank ``rank``'s share of each batch: outputs and input
    gradients of the share, parameter gradients summed over the ranks, final state."""
    record: dict[str, list] = {"outputs": [], "inputs": [], "grads": []}
    for step in range(STEPS):
        share = len(sync_features(step)[0]) // world
        xs = [x[rank * share : (rank + 1) * share].requires_grad_() for x in sync_features(step)]
        layer.zero_grad(set_to_none=True)
        out = layer(xs)
        out.square().sum().backward()
        grads = {n: p.grad.clone() for n, p in layer.named_parameters()}
        if world > 1:
            for g in grads.values():
                torch.distributed.all_reduce(g)
        record["outputs"].append(out.detach())
        record["inputs"].append([x.grad for x in xs])
        record["grads"].append(grads)
    record["state"] = [{k: v.clone() for k, v in layer.state_dict().items()}]
    return record


def sync_worker(rank: int, world: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    results = {}
    for level, bottleneck in SYNC_CASES:
        layer = nn.SyncBatchNorm.convert_sync_batchnorm(sync_layer(bottleneck))
        layer.memory_efficient = level
        results[level] = sync_steps(layer, rank, world)
    torch.save(results, f"{out}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_sync_batch_norm_pools_the_statistics_of_every_rank(tmp_path):
    """Two processes (gloo, CPU), each with half of every batch, train a SyncBatchNorm layer
    at each level like one process with the whole batch: outputs, input gradients, summed
    parameter gradients and running statistics (updated once per step, from all ranks)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(sync_worker, args=(2, port, str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for level, bottleneck in SYNC_CASES:
        whole = sync_steps(sync_layer(bottleneck))
        for r, got in enumerate(rank[level] for rank in ranks):
            for step in range(STEPS):
                half = slice(4 * r, 4 * r + 4)
                torch.testing.assert_close(got["outputs"][step], whole["outputs"][step][half])
                for gx, wx in zip(got["inputs"][step], whole["inputs"][step], strict=True):
                    torch.testing.assert_close(gx, wx[half])
                for name, g in whole["grads"][step].items():
                    torch.testing.assert_close(got["grads"][step][name], g, msg=name)
            for key, value in whole["state"][0].items():
                torch.testing.assert_close(got["state"][0][key], value, msg=f"{level} {key}")


# ------------------------------------------------------------------ the memory commands
def test_measure_reports_each_level_with_the_same_weights():
    costs = measure("densenet_cifar", 2, 16, rounds=1, depth=16, growth_rate=4)
    assert [c.level for c in costs] == list(LEVELS)
    sizes = [c.activation_bytes for c in costs]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes)
    assert all(c.step_seconds > 0 and c.cpu_seconds > 0 and c.peak_bytes is None for c in costs)
    lines = level_table(costs).splitlines()
    assert lines[0] == (
        "| level | backward recomputes | activation MiB | vs level 0 | step s | vs level 0 "
        "| CPU s | vs level 0 |"
    )
    cells = [line.removesuffix(" |").split(" | ") for line in lines[2:]]
    assert [c[0] for c in cells] == ["| 0", "| 1", "| 2", "| 3"]
    assert cells[0][3] == cells[0][5] == cells[0][7] == "1.00x"
    assert cells[3][2] == f"{sizes[3] / 2**20:.1f}" and cells[3][3] == f"{sizes[3] / sizes[0]:.2f}x"
    untimed = measure("densenet_cifar", 2, 16, levels=(0, 3), rounds=0, depth=16, growth_rate=4)
    assert untimed == [LevelCost(0, sizes[0]), LevelCost(3, sizes[3])]
    assert level_table(untimed).splitlines()[0].endswith("| activation MiB | vs level 0 |")


def test_authors_table_beside_ours(capsys):
    authors_memory.main(["--batch-size", "2", "--rounds", "0"])
    out = capsys.readouterr().out
    assert (
        "| 4 | custom layer: + shared BN outputs (recomputed) | 1655 | 0.30x | 0.175 | 1.14x |"
        in out
    )
    assert "| 0 | original implementation | 5453 | 1.00x | 0.153 | 1.00x |" in out
    ours = [line for line in out.splitlines() if line.startswith(("| 0 | nothing", "| 3 | all"))]
    assert len(ours) == 2 and ours[0].endswith(" | 1.00x |")
    assert (
        "optMemory 4 and our level 1 keep the same: the authors 0.30x memory at 1.14x time" in out
    )


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--batch-size", "0"], "--batch_size 0: expected a positive number of images"),
        (["--rounds", "-1"], "--rounds -1: expected 0 (no timing) or more"),
        (["--device", "tpu"], "Expected a typing.Literal['cpu', 'cuda']. Got value: tpu"),
        (["--models", "bc100,resnet"], "--models bc100,resnet: unknown resnet; expected of bc100"),
    ],
)
def test_memory_command_rejects_bad_options(args, error, capsys):
    with pytest.raises(SystemExit) as stopped:
        memory.main(args)
    assert stopped.value.code == 2
    assert error in capsys.readouterr().err
