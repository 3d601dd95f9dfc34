"""DenseNetModule's speed options: channels-last, torch.compile (plain checkpoint keys, one
graph per mode) and, on CUDA, steps that never wait for the GPU and SyncBatchNorm with the
memory-efficient network."""

from __future__ import annotations

import pytest
import torch
from module_fixtures import TINY
from module_fixtures import RandomData as _Random
from module_fixtures import quiet_trainer as _trainer

from densenet_lit.module import DenseNetModule

MODERN_RECIPE = {
    "mixup_alpha": 0.2,
    "cutmix_alpha": 1.0,
    "label_smoothing": 0.1,
    "warmup_steps": 3,
    "norm_weight_decay": 0.0,
}


def test_channels_last_gives_the_same_logits():
    torch.manual_seed(0)
    plain = DenseNetModule(**TINY).eval()
    fast = DenseNetModule(**TINY, channels_last=True).eval()
    fast.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(plain(x), fast(x), atol=1e-5)


def test_compiled_network_saves_plain_keys():
    module = DenseNetModule(**TINY, compile=True)
    module.configure_model()
    assert module.compiled
    keys = list(module.state_dict())
    assert keys and not any("_orig_mod" in k for k in keys)
    # and such a state dict loads into an uncompiled module
    DenseNetModule(**TINY).load_state_dict(module.state_dict())


@pytest.mark.slow
def test_compiled_network_trains_and_checkpoints_load_uncompiled(tmp_path):
    module = DenseNetModule(**TINY, num_classes=4, compile=True)
    trainer = _trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(module, datamodule=_Random())
    path = tmp_path / "compiled.ckpt"
    trainer.save_checkpoint(path)
    state = torch.load(path, weights_only=False)["state_dict"]
    assert not any("_orig_mod" in k for k in state)
    plain = DenseNetModule.load_from_checkpoint(path, compile=False)
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(plain.eval()(x), module.eval()(x), atol=1e-4)


def test_compiled_network_has_one_graph_for_training_and_one_for_evaluation(tmp_path, monkeypatch):
    """A fit with validation (batches of 8, 8 and 4), then test and predict (which Lightning
    runs in inference mode): one graph is compiled for training, one for evaluation; the
    padded last batch and the copy out of inference mode give the plain network's outputs."""
    graphs = []

    def counting_backend(gm, example_inputs):
        graphs.append("train" if torch.is_grad_enabled() else "eval")
        return gm.forward  # no code generation: the graph runs as traced

    compile_ = torch.compile
    monkeypatch.setattr(
        torch, "compile", lambda model, **kw: compile_(model, **{**kw, "backend": counting_backend})
    )
    torch.compiler.reset()
    module = DenseNetModule(**TINY, num_classes=4, compile=True)
    data = _Random(n=20)
    trainer = _trainer(tmp_path, max_epochs=2, limit_train_batches=2)
    trainer.fit(module, datamodule=data)
    trainer.test(module, datamodule=data, verbose=False)
    predicted = torch.cat(trainer.predict(module, datamodule=data))
    assert graphs == ["eval", "train"]  # the sanity check's validation comes first
    with torch.no_grad():
        expected = module.model.eval()(data.data.tensors[0]).softmax(dim=-1)
    assert predicted.shape == (20, 4)
    assert torch.allclose(predicted, expected, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.parametrize("recipe", [{}, MODERN_RECIPE], ids=["paper", "modern"])
def test_training_steps_on_cuda_never_wait_for_the_gpu(tmp_path, recipe):
    """Between logging steps, a training step in a Trainer with the CLI's callbacks queues its
    GPU work without a device-to-host synchronisation (none of `.item()`, a blocking copy,
    `torch.unique`, ...), so the host runs ahead of the GPU as in a plain PyTorch loop; also
    with the modern recipe's MixUp/CutMix (drawn on the CPU, permutation on the device),
    label smoothing, warm-up and parameter groups."""
    import warnings

    from lightning.pytorch import Callback

    from densenet_lit.callbacks import default_callbacks

    class WatchSyncs(Callback):
        def __init__(self):
            self.records = []
            self._catcher = None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 3:  # after the first steps (optimizer state, cuDNN autotuning)
                self._catcher = warnings.catch_warnings(record=True)
                self.records = self._catcher.__enter__()
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx == 8:
                torch.cuda.set_sync_debug_mode("default")
                self._catcher.__exit__(None, None, None)

    watch = WatchSyncs()
    module = DenseNetModule(**TINY, num_classes=4, **recipe)
    trainer = _trainer(
        tmp_path,
        accelerator="gpu",
        devices=1,
        max_epochs=1,
        limit_train_batches=10,
        limit_val_batches=0,
        log_every_n_steps=1000,
        callbacks=[*default_callbacks(), watch],
    )
    trainer.fit(module, datamodule=_Random(n=80))
    syncs = [f"{w.filename}:{w.lineno}" for w in watch.records if "synchroniz" in str(w.message)]
    assert not syncs, f"host waited for the GPU at: {syncs}"


@pytest.mark.gpu
def test_sync_batchnorm_with_memory_efficient_on_cuda(tmp_path):
    """trainer.sync_batchnorm (DDP, here on one GPU) with the memory-efficient network: every
    BN layer is a SyncBatchNorm, and the weights and running statistics after a few steps are
    those of the network without recomputation (the recomputation neither communicates out
    of step nor updates the running statistics a second time)."""
    states = {}
    for efficient in (False, True):
        torch.manual_seed(0)
        module = DenseNetModule(**TINY, num_classes=4, memory_efficient=efficient)
        trainer = _trainer(
            tmp_path,
            accelerator="gpu",
            devices=1,
            strategy="ddp",
            sync_batchnorm=True,
            max_steps=3,
            limit_val_batches=0,
        )
        torch.manual_seed(1)
        trainer.fit(module, datamodule=_Random(n=32))
        norms = [m for m in module.modules() if "BatchNorm" in type(m).__name__]
        assert norms and all(isinstance(m, torch.nn.SyncBatchNorm) for m in norms)
        states[efficient] = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    assert states[True].keys() == states[False].keys()
    for key, value in states[False].items():
        assert torch.allclose(states[True][key].float(), value.float(), atol=1e-5), key
