"""`magvit2-convert i3d`: the TorchScript Inception-I3D of the common FVD code -> our detector's weights, once.

The file: `i3d_torchscript.pt`, the TF-Hub I3D (`deepmind/i3d-kinetics-400/1`, the network of the original FVD code)
ported to PyTorch and scripted by StyleGAN-V, and since used by DIGAN, MCVD, common_metrics_on_video_quality and the
papers whose FVD tables they fed. Its `forward(x, rescale=, resize=, return_features=True)` gives the 400 Kinetics
logits before the softmax: the "logits" features of `magvit2.fvd`.

Loading TorchScript RUNS CODE from the file (`torch.jit.load` executes its serialized program), so nothing else in
this package loads one (`magvit2.fvd.load_i3d` refuses them). This command does it once, on an explicit request,
and writes a plain `.safetensors` state dict of `magvit2.fvd.InceptionI3d` that `magvit2-evaluate --i3d-weights`
reads without running anything; the source file's sha256 is recorded in the output's metadata.

The mapping is by structure, not by parameter names (ports name them differently): the module's convolutions and
batch norms in the order they are registered (Inception-I3D's forward order: the stem, then each Mixed block's
branches 0, 1a, 1b, 2a, 2b, 3b, then the logits conv) go onto ours, every shape checked. A batch norm without a
scale (TF's I3D has none) gets 1. Then the conversion is verified: the TorchScript model's own features and ours on
the same clips (16 frames of 224x224, the published protocol) must agree, else nothing is written.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from magvit2.fvd import LOGITS_POOL, InceptionI3d, i3d_features, load_i3d
from magvit2.serialization import atomic_write, package_version

BN_EPS = 1e-3  # TF's and ours
VERIFY_FRAMES, VERIFY_SIZE = 16, 224  # the published FVD protocol's clips
TOLERANCE = 1e-3  # max |ours - theirs| relative to max |theirs| on the verification clips


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _key(prefix: str, leaf: str) -> str:
    return f"{prefix}.{leaf}" if prefix else leaf


def _units(state: dict[str, torch.Tensor]) -> list[tuple[str, str | None]]:
    """(conv prefix, batch-norm prefix or None) for every convolution of a state dict, in registration order: a
    conv is a module with a 5-d `weight`; a batch norm one with `running_mean` and `running_var`, belonging to the
    conv registered just before it."""
    groups: dict[str, set[str]] = {}
    for key in state:
        prefix, _, leaf = key.rpartition(".")
        groups.setdefault(prefix, set()).add(leaf)
    units: list[tuple[str, str | None]] = []
    for prefix, leaves in groups.items():
        if "weight" in leaves and state[_key(prefix, "weight")].ndim == 5:
            units.append((prefix, None))
        elif {"running_mean", "running_var"} <= leaves:
            if not units or units[-1][1] is not None:
                raise ValueError(f"batch norm {prefix!r} does not follow a convolution: not an Inception-I3D layout")
            units[-1] = (units[-1][0], prefix)
    return units


def map_state(theirs: dict[str, torch.Tensor], model: InceptionI3d) -> dict[str, torch.Tensor]:
    """Their state dict -> ours, by structure (see the module docstring). ValueError names the first mismatch."""
    ours = model.state_dict()
    our_units = _units(ours)
    their_units = _units(theirs)
    if len(their_units) != len(our_units):
        raise ValueError(f"expected an Inception-I3D with {len(our_units)} convolutions; this module has "
                         f"{len(their_units)} ({sorted(theirs)[:3]}...)")
    out: dict[str, torch.Tensor] = {}

    def put(our_key: str, value: torch.Tensor, source: str) -> None:
        if tuple(value.shape) != tuple(ours[our_key].shape):
            raise ValueError(f"{source} has shape {tuple(value.shape)} where Inception-I3D's {our_key} has "
                             f"{tuple(ours[our_key].shape)}: not the same architecture (or another layer order)")
        out[our_key] = value.detach().to("cpu", torch.float32).contiguous()

    for (our_conv, our_bn), (conv, bn) in zip(our_units, their_units):
        put(f"{our_conv}.weight", theirs[f"{conv}.weight"], f"{conv}.weight")
        has_bias = f"{conv}.bias" in theirs
        if has_bias != (f"{our_conv}.bias" in ours):
            raise ValueError(f"{conv} {'has' if has_bias else 'lacks'} a bias where Inception-I3D's {our_conv} "
                             f"{'does not' if has_bias else 'does'}")
        if has_bias:
            put(f"{our_conv}.bias", theirs[f"{conv}.bias"], f"{conv}.bias")
        if (bn is None) != (our_bn is None):
            raise ValueError(f"{conv} {'lacks' if bn is None else 'has'} a batch norm where Inception-I3D's "
                             f"{our_conv} {'has' if bn is None else 'has none'}")
        if bn is None:
            continue
        for leaf in ("running_mean", "running_var"):
            put(f"{our_bn}.{leaf}", theirs[f"{bn}.{leaf}"], f"{bn}.{leaf}")
        for leaf, default in (("weight", torch.ones_like), ("bias", torch.zeros_like)):  # TF's I3D has no scale
            value = theirs.get(f"{bn}.{leaf}")
            put(f"{our_bn}.{leaf}", default(ours[f"{our_bn}.{leaf}"]) if value is None else value, f"{bn}.{leaf}")
        out[f"{our_bn}.num_batches_tracked"] = ours[f"{our_bn}.num_batches_tracked"]
    return out


def _check_eps(module: Any) -> None:
    """Every batch norm of the scripted module must use TF's epsilon (1e-3), as ours does."""
    for name, sub in module.named_modules():
        eps = getattr(sub, "eps", None)
        if getattr(sub, "original_name", "").startswith("BatchNorm") and eps is not None and abs(eps - BN_EPS) > 1e-9:
            raise ValueError(f"batch norm {name!r} uses eps={eps}; Inception-I3D (TF) uses {BN_EPS}")


@torch.no_grad()
def verify(scripted: Any, model: InceptionI3d, clips: int = 1, frames: int = VERIFY_FRAMES, seed: int = 0
           ) -> dict[str, Any]:
    """Their `return_features=True` output vs our logits features on the same random clips, twice: raw input
    (`rescale=False, resize=False`, clips of `frames` x 224 x 224 in [-1, 1]) and their own preprocessing
    (`rescale=True, resize=True` on the same clips as 0..255 values at 256x256) vs ours (`i3d_features`, resize 224).
    Returns the relative max differences; ValueError when either exceeds TOLERANCE."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(clips, 3, frames, 256, 256, generator=gen) * 2 - 1  # (n, 3, t, 256, 256) in [-1, 1]
    raw = torch.nn.functional.interpolate(x.flatten(1, 2), size=(VERIFY_SIZE, VERIFY_SIZE), mode="bilinear",
                                          align_corners=False).view(clips, 3, frames, VERIFY_SIZE, VERIFY_SIZE)
    results = {}
    for name, (theirs_in, flags, ours_fn) in {
        "raw": (raw, dict(rescale=False, resize=False), lambda: model.logits_features(raw)),
        "preprocessed": ((x + 1) * 127.5, dict(rescale=True, resize=True), lambda: i3d_features(model, x)),
    }.items():
        try:
            theirs = scripted(theirs_in.contiguous(), return_features=True, **flags)
        except Exception as e:  # a module with another interface: say what was expected
            raise ValueError(f"the TorchScript module does not run as i3d_torchscript.pt does (forward(x, rescale=, "
                             f"resize=, return_features=True)): {str(e).splitlines()[0] if str(e) else e!r}") from e
        theirs = theirs[0] if isinstance(theirs, (tuple, list)) else theirs
        ours = ours_fn()
        if tuple(theirs.shape) != tuple(ours.shape):
            raise ValueError(f"the TorchScript module's features have shape {tuple(theirs.shape)}; ours "
                             f"{tuple(ours.shape)} (expected ({clips}, 400) logits)")
        diff = float((theirs.float() - ours).abs().max() / theirs.float().abs().max().clamp(min=1e-12))
        if not diff <= TOLERANCE:
            raise ValueError(f"converted weights do not reproduce the TorchScript features ({name} input: max "
                             f"difference {diff:.2e} of their largest value, tolerance {TOLERANCE:g}); nothing written")
        results[name] = diff
    return results


def convert_i3d_torchscript(source: str | Path, out: str | Path, overwrite: bool = False, check: bool = True,
                            verify_clips: int = 1) -> dict[str, Any]:
    """Load the TorchScript I3D at `source` (this RUNS ITS CODE: only for files you trust), map its weights onto
    `InceptionI3d`, verify the features (unless `check=False`) and write `out` (.safetensors) atomically, with the
    source's sha256 in its metadata. Returns a summary."""
    source, out = Path(source), Path(out)
    if not source.is_file():
        raise FileNotFoundError(f"TorchScript file not found: {source}")
    if out.suffix != ".safetensors":
        raise ValueError(f"OUT must end in .safetensors; got {out}")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; refusing to overwrite it: pass --overwrite, or choose another OUT")
    digest = sha256_file(source)
    try:
        scripted = torch.jit.load(str(source), map_location="cpu").eval()
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"{source} is not a loadable TorchScript archive: {str(e).splitlines()[0]}") from e
    _check_eps(scripted)
    model = InceptionI3d().eval()
    state = map_state({k: v for k, v in scripted.state_dict().items()}, model)
    model.load_state_dict(state, strict=True)
    checks = verify(scripted, model, clips=verify_clips) if check else None
    metadata = {"format": "magvit2.fvd.InceptionI3d state dict", "features": "logits",
                "logits_pool": "x".join(map(str, LOGITS_POOL)), "source_file": source.name, "source_sha256": digest,
                "source_kind": "TorchScript (loaded once by magvit2-convert i3d)",
                "verified": "no" if checks is None else
                f"{VERIFY_FRAMES}x{VERIFY_SIZE}x{VERIFY_SIZE} clips x {verify_clips}: max relative difference raw "
                f"{checks['raw']:.2e}, with its preprocessing {checks['preprocessed']:.2e}",
                "converted_with": f"magvit2-maskgit {package_version()}, torch {torch.__version__}"}
    with atomic_write(out) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    load_i3d(out)  # what evaluate will do: strict keys and shapes
    return {"out": str(out), "source_sha256": digest, "tensors": len(state), "checks": checks}
