"""LoRA adapters in a `TextToVideoPipeline`, the way diffusers' pipelines take them (`LoraLoaderMixin`):

    pipe.load_lora_weights("runs/lora-run", adapter_name="digits", weight=0.8)   # a folder, a run folder or a Hub id
    pipe.set_adapters(["digits", "style"], adapter_weights=[0.8, 0.5])
    pipe.fuse_lora(); ...; pipe.unfuse_lora()                    # unfuse restores the exact base weights
    pipe.unload_lora_weights()                                   # back to the base transformer (fused weights stay)

An adapter applies only to the pipeline it was trained on: `load_lora_weights` compares the sha256 of this
transformer's base weights with the one the adapter recorded and refuses another base with one line naming both
(`check_base=False` skips the check). Every loaded adapter is active, each at its weight, until `set_adapters`
says otherwise; a weight of 0 gives the base's outputs exactly.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from .lora import LoraAdapter, adapter_parameters, add_lora, base_state_dict, require_peft, weights_sha256


class LoraState:
    """What a pipeline knows about its adapters: weights by name (load order), where each came from, the base's
    requires_grad flags before the first adapter (restored by unload), and the exact base weights while fused."""

    def __init__(self) -> None:
        self.weights: dict[str, float] = {}
        self.sources: dict[str, str] = {}
        self.active: list[str] = []
        self.enabled = True
        self.requires_grad: dict[str, bool] = {}
        self.fused: dict[int, tuple[torch.nn.Parameter, torch.Tensor]] = {}  # id -> (base weight, its exact copy)


class LoraLoaderMixin:
    """LoRA methods of `TextToVideoPipeline` (they act on `self.transformer`)."""

    transformer: torch.nn.Module
    name_or_path: str | None = None

    @property
    def _lora(self) -> LoraState:
        state = self.__dict__.get("_lora_state")
        if state is None:
            state = self.__dict__["_lora_state"] = LoraState()
        return state

    def _lora_layers(self) -> list[Any]:
        from peft.tuners.tuners_utils import BaseTunerLayer

        return [m for m in self.transformer.modules() if isinstance(m, BaseTunerLayer)]

    def _require_adapters(self, names: Sequence[str]) -> None:
        unknown = [n for n in names if n not in self._lora.weights]
        if unknown:
            raise ValueError(f"no LoRA adapter named {unknown[0]!r} is loaded (loaded: {list(self._lora.weights)})")

    def _require_unfused(self, action: str) -> None:
        if self._lora.fused:
            raise ValueError(f"cannot {action} while LoRA adapters are fused into the weights; call unfuse_lora() "
                             "first")

    # loading --------------------------------------------------------------------------------------------------------

    def load_lora_weights(self, pretrained_model_name_or_path: str | os.PathLike | LoraAdapter,
                          adapter_name: str | None = None, weight: float = 1.0, check_base: bool = True,
                          **hub_kwargs: Any) -> str:
        """Adds a LoRA adapter (a folder, a LoRA run folder, a Hub repo id or a `LoraAdapter`) to the transformer as
        `adapter_name` (default `default_<i>`) at `weight`; it is active together with the adapters loaded before.
        Refused (ValueError) when it was trained on another base pipeline. Returns the adapter's name."""
        require_peft()
        state = self._lora
        adapter = (pretrained_model_name_or_path if isinstance(pretrained_model_name_or_path, LoraAdapter)
                   else LoraAdapter.from_pretrained(pretrained_model_name_or_path, **hub_kwargs))
        name = adapter_name if adapter_name is not None else f"default_{len(state.weights)}"
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"adapter_name must be a Python identifier such as 'style'; got {name!r}")
        if name in state.weights:
            raise ValueError(f"an adapter named {name!r} is already loaded; pass another adapter_name or "
                             "unload_lora_weights() first")
        _check_weight(weight, "weight")
        self._require_unfused("load an adapter")
        if check_base:
            ours = weights_sha256(base_state_dict(self.transformer))
            theirs = adapter.base["transformer_sha256"]
            if ours != theirs:
                here = self.name_or_path or "this pipeline"
                raise ValueError(f"LoRA adapter {adapter.name} was trained on {adapter.base['name_or_path']} "
                                 f"(transformer sha256 {theirs[:12]}), not on {here} (transformer sha256 {ours[:12]}); "
                                 "load it into the pipeline it was trained on")
        if not state.weights:
            state.requires_grad = {n: p.requires_grad for n, p in self.transformer.named_parameters()}
        add_lora(self.transformer, adapter.config, name)
        params = adapter_parameters(self.transformer, name)
        missing, unexpected = sorted(set(params) - set(adapter.weights)), sorted(set(adapter.weights) - set(params))
        wrong = [k for k in params if k in adapter.weights and params[k].shape != adapter.weights[k].shape]
        if missing or unexpected or wrong:
            self._remove_adapter(name)
            detail = (f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}" if unexpected
                      else f"{wrong[0]} has shape {tuple(adapter.weights[wrong[0]].shape)}, the transformer "
                           f"expects {tuple(params[wrong[0]].shape)}")
            raise ValueError(f"LoRA adapter {adapter.name} does not fit this transformer: {detail}")
        with torch.no_grad():
            for key, param in params.items():
                param.copy_(adapter.weights[key])
        state.weights[name], state.sources[name] = float(weight), adapter.name
        self._activate([*state.active, name])
        return name

    # choosing and weighting -----------------------------------------------------------------------------------------

    def set_adapters(self, adapter_names: str | Sequence[str], adapter_weights: float | Sequence[float] | None = None
                     ) -> None:
        """Make exactly `adapter_names` active, at `adapter_weights` (one number for all, one per name; None: 1.0)."""
        names = [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)
        self._require_adapters(names)
        self._require_unfused("change the active adapters")
        if adapter_weights is None:
            weights = [1.0] * len(names)
        elif isinstance(adapter_weights, (int, float)):
            weights = [float(adapter_weights)] * len(names)
        else:
            weights = list(adapter_weights)
            if len(weights) != len(names):
                raise ValueError(f"got {len(weights)} adapter_weights for {len(names)} adapters; pass one per name")
        for name, w in zip(names, weights):
            _check_weight(w, f"the weight of {name!r}")
            self._lora.weights[name] = float(w)
        self._activate(names)

    def get_active_adapters(self) -> list[str]:
        return list(self._lora.active) if self._lora.enabled else []

    def get_list_adapters(self) -> dict[str, list[str]]:
        """diffusers' form: {component: [adapter names]}."""
        return {"transformer": list(self._lora.weights)} if self._lora.weights else {}

    def disable_lora(self) -> None:
        """Run the base transformer (adapters stay loaded; `enable_lora` turns them back on)."""
        self._require_unfused("disable the adapters")
        for layer in self._lora_layers():
            layer.enable_adapters(False)
        self._lora.enabled = False

    def enable_lora(self) -> None:
        for layer in self._lora_layers():
            layer.enable_adapters(True)
        self._lora.enabled = True
        self._activate(self._lora.active)

    def _activate(self, names: list[str]) -> None:
        from peft.functional import set_adapter

        state = self._lora
        state.active = list(dict.fromkeys(names))
        for layer in self._lora_layers():
            for name in layer.lora_A:
                layer.set_scale(name, state.weights.get(name, 1.0))
        set_adapter(self.transformer, state.active, inference_mode=True)
        if not state.enabled:
            for layer in self._lora_layers():
                layer.enable_adapters(False)

    # fusing and unloading -------------------------------------------------------------------------------------------

    def fuse_lora(self, lora_scale: float = 1.0, adapter_names: Sequence[str] | None = None) -> None:
        """Add the active adapters' updates (at their weights x lora_scale) into the base weights: generation then
        costs what the base does. `unfuse_lora` puts the exact base weights back."""
        state = self._lora
        names = list(state.active) if adapter_names is None else list(adapter_names)
        self._require_adapters(names)
        self._require_unfused("fuse again")
        if set(names) != set(state.active) or not state.enabled:
            raise ValueError(f"fuse_lora fuses the active adapters ({self.get_active_adapters()}); call "
                             f"set_adapters({names}) (and enable_lora()) first")
        _check_weight(lora_scale, "lora_scale")
        with torch.no_grad():
            for layer in self._lora_layers():
                present = [n for n in names if n in layer.lora_A]
                if not present:
                    continue
                weight = layer.get_base_layer().weight
                state.fused[id(weight)] = (weight, weight.detach().clone())
                for n in present:
                    layer.set_scale(n, state.weights[n] * lora_scale)
                layer.merge(adapter_names=present)
                for n in present:
                    layer.set_scale(n, state.weights[n])

    def unfuse_lora(self) -> None:
        """Undo `fuse_lora`, restoring the base weights bit for bit (not by subtracting the update again)."""
        state = self._lora
        with torch.no_grad():
            for layer in self._lora_layers():
                layer.merged_adapters.clear()  # the weights are put back below, exactly
            for weight, original in state.fused.values():
                weight.copy_(original)
        state.fused.clear()

    def unload_lora_weights(self) -> None:
        """Remove every adapter and its layers: the transformer is the base again (its parameter names too). Weights
        fused before stay in the base, as in diffusers (fuse_lora + unload_lora_weights + save_pretrained saves a
        merged pipeline)."""
        state = self._lora
        for layer in self._lora_layers():
            layer.merged_adapters.clear()
        for name in list(state.weights):
            self._remove_adapter(name)
        for name, p in self.transformer.named_parameters():
            p.requires_grad_(state.requires_grad.get(name, p.requires_grad))
        self.__dict__["_lora_state"] = LoraState()

    def delete_adapters(self, adapter_names: str | Sequence[str]) -> None:
        """Remove some adapters (the others stay, with their weights)."""
        names = [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)
        self._require_adapters(names)
        self._require_unfused("delete adapters")
        for name in names:
            self._remove_adapter(name)
        if not self._lora.weights:
            self.unload_lora_weights()
        else:
            self._activate([n for n in self._lora.active if n in self._lora.weights])

    def _remove_adapter(self, name: str) -> None:
        """Drop adapter `name` from every layer; a layer left without adapters becomes its base layer again (peft's
        `unload` lives on the PeftModel wrapper, which in-place injection does not keep)."""
        state = self._lora
        for module in list(self.transformer.modules()):
            for child_name, child in list(module.named_children()):
                if not hasattr(child, "lora_A") or name not in child.lora_A:
                    continue
                child.delete_adapter(name)
                if not child.lora_A:
                    setattr(module, child_name, child.get_base_layer())
        config = getattr(self.transformer, "peft_config", None)
        if isinstance(config, dict):
            config.pop(name, None)
            if not config:
                del self.transformer.peft_config
        state.weights.pop(name, None)
        state.sources.pop(name, None)
        state.active = [n for n in state.active if n != name]


def _check_weight(value: Any, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not -1e3 < value < 1e3:
        raise ValueError(f"{what} must be a number (1.0 = as trained, 0 = off); got {value!r}")
