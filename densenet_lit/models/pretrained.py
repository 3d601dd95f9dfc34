"""Load torchvision's ImageNet DenseNet weights into our networks.

Our module names match torchvision's, so loading is a matter of key names: torchvision's
published weight files use the names of an older release (``norm.1.weight`` for
``norm1.weight``), and checkpoints saved from ``nn.DataParallel`` or ``torch.compile``
carry ``module.`` or ``_orig_mod.`` prefixes. Weight files are read with torch's safe
unpickler only (:func:`densenet_lit.checkpoints.safe_load`): a state dict never needs more.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from densenet_lit.benchmarks import IMAGENET_CLASSES
from densenet_lit.checkpoints import UntrustedCheckpointError, safe_load
from densenet_lit.models.densenet import DenseNet
from densenet_lit.models.zoo import CIFAR_ARCH, IMAGENET_ARCH, IMAGENET_CONFIGS

_OLD_LAYER_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)
_PREFIXES = ("module.", "_orig_mod.")
# How to use a weight file that the safe unpickler refuses, if its origin is trusted: there is
# no switch for it; the user takes the tensors out, knowing the file's code runs then.
TRUST_HINT = (
    "load it yourself with torch.load(path, weights_only=False) and pass its tensors: "
    "load_torchvision_weights takes a state dict, and torch.save of a dict holding only the "
    "tensors makes a file that --model.pretrained loads"
)


def torchvision_key(key: str) -> str:
    """Translate one key of a torchvision DenseNet state dict to our (and current torchvision's)
    name: ``features.denseblock1.denselayer1.norm.1.weight`` -> ``...denselayer1.norm1.weight``."""
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
                changed = True
    match = _OLD_LAYER_KEY.match(key)
    return match.group(1) + match.group(2) if match else key


def _read_state_dict(source: Mapping[str, Tensor] | str | os.PathLike) -> Mapping[str, Tensor]:
    if isinstance(source, Mapping):
        state = source
    else:
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"Pretrained weights not found at {path!r}. Download torchvision's weights "
                "(e.g. torchvision.models.DenseNet121_Weights.IMAGENET1K_V1.url) and pass "
                "the file's path."
            )
        try:
            state = safe_load(path, opt_in=TRUST_HINT)
        except UntrustedCheckpointError:
            raise
        except Exception as err:  # truncated download, not a torch file, ...
            raise ValueError(
                f"Could not read {path!r} as a PyTorch state dict ({type(err).__name__}: {err}). "
                "The file may be truncated or corrupt: delete it and download it again."
            ) from err
    # Lightning checkpoints keep the weights under "state_dict" with a "model." prefix.
    if "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = {k.removeprefix("model."): v for k, v in state["state_dict"].items()}
    return state


# torchvision's own builders (torchvision.models.<name>) of the paper's ImageNet networks.
TORCHVISION_NAMES = ("densenet121", "densenet161", "densenet169", "densenet201")


def torchvision_equivalent(arch: str, kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The torchvision builder that makes the network ``build_model(arch, **kwargs)`` with the
    same tensor names, as ``(name in torchvision.models, its keyword arguments)``, or None
    (CIFAR networks, inputs other than RGB). Our names are torchvision's current ones, so its
    ``load_state_dict`` takes our weights as they are: ``("densenet121", {"num_classes": 10})``,
    or ``("DenseNet", {...})`` for DenseNet-264 and the ``densenet_imagenet`` networks."""
    if arch == CIFAR_ARCH or kwargs.get("in_channels", 3) != 3:
        return None
    if arch == IMAGENET_ARCH:
        k, blocks = kwargs["growth_rate"], tuple(kwargs["block_config"])
    else:
        k, blocks = IMAGENET_CONFIGS[arch]
    same = {key: kwargs[key] for key in ("num_classes", "bn_size") if key in kwargs}
    if arch in TORCHVISION_NAMES and same.get("bn_size", 4) == 4:
        return arch, {"num_classes": same.get("num_classes", IMAGENET_CLASSES)}
    return "DenseNet", {
        "growth_rate": k,
        "block_config": list(blocks),
        "num_init_features": 2 * k,  # the stem of densenet_imagenet
        **same,
    }


def load_torchvision_weights(
    model: DenseNet,
    state_dict_or_path: Mapping[str, Tensor] | str | os.PathLike,
    exclude_classifier: bool = False,
) -> DenseNet:
    """Load a torchvision densenet121/161/169/201 state dict (or weight file) into ``model``.

    Old and new torchvision key names are accepted. Every tensor must find its place with the
    same shape; otherwise a ValueError lists what does not fit (usually the wrong model, e.g.
    densenet169 weights for a densenet121). With ``exclude_classifier`` the classifier keeps
    its own weights (transfer to another number of classes). Returns ``model``.
    """
    source = _read_state_dict(state_dict_or_path)
    state = {torchvision_key(k): v for k, v in source.items()}
    own = model.state_dict()
    if exclude_classifier:
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        own = {k: v for k, v in own.items() if not k.startswith("classifier.")}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    # torchvision's files predate num_batches_tracked; those counters are not weights.
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected or mismatched:
        problems = []
        if mismatched:
            k = mismatched[0]
            problems.append(
                f"{len(mismatched)} shape mismatches (first: {k}: file {tuple(state[k].shape)}, "
                f"model {tuple(own[k].shape)})"
            )
        if missing:
            problems.append(f"{len(missing)} missing keys (first: {missing[0]})")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected keys (first: {unexpected[0]})")
        raise ValueError(
            "These weights do not fit the model: "
            + "; ".join(problems)
            + ". Check that the file is for the same architecture (densenet121/161/169/201) and "
            "number of classes as the model."
        )
    model.load_state_dict(state, strict=False)
    return model
