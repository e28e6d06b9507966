"""What every diffusers pipeline has, for `TextToVideoPipeline`: `components`, `to(device, dtype)`, `dtype`, `device`,
`set_progress_bar_config` / `progress_bar`, and `enable_model_cpu_offload`.

Model CPU offload (diffusers' `enable_model_cpu_offload`): the components stay on the CPU and each one is moved to
the execution device only while it runs (the text encoder for the prompts, the tokenizer for a prime video and for
decoding, the transformer for sampling), then moved back, so the accelerator holds one component at a time.
diffusers does this with accelerate's forward hooks; ours are explicit (`running(name)`), because our components
are used through methods other than `forward` (`tokenize`, `decode_from_code_indices`, `encode`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

COMPONENTS = ("tokenizer", "text_encoder", "transformer")


class PipelineBase:
    """Mixin over an object with `tokenizer`, `text_encoder` and `transformer` modules."""

    _offload_device: torch.device | None = None
    _progress_bar_config: dict[str, Any] | None = None

    # components, dtype, device ------------------------------------------------------------------------------------

    @property
    def components(self) -> dict[str, nn.Module]:
        """{"tokenizer", "text_encoder", "transformer"} -> the modules (diffusers' `pipe.components`: pass them to
        another pipeline's constructor as `TextToVideoPipeline(**pipe.components)`)."""
        return {name: getattr(self, name) for name in COMPONENTS}

    @property
    def dtype(self) -> torch.dtype:
        """The transformer's dtype (`to(torch.bfloat16)` casts every component)."""
        return self.transformer.dtype

    @property
    def device(self) -> torch.device:
        """Where sampling runs: the transformer's device, or the execution device under model CPU offload."""
        return self._offload_device if self._offload_device is not None else self.transformer.device

    def to(self, *args: Any, device: torch.device | str | None = None, dtype: torch.dtype | None = None
           ) -> PipelineBase:
        """diffusers' `pipe.to("cuda")`, `pipe.to(torch.bfloat16)`, `pipe.to("cuda", torch.float16)`,
        `pipe.to(device=..., dtype=...)`: every component moves / is cast (the tokenizer's quantizer keeps float32).
        Returns self."""
        for arg in args:
            if isinstance(arg, torch.dtype):
                if dtype is not None:
                    raise ValueError(f"to() got two dtypes: {dtype} and {arg}")
                dtype = arg
            elif isinstance(arg, (str, torch.device)):
                if device is not None:
                    raise ValueError(f"to() got two devices: {device} and {arg}")
                device = arg
            else:
                raise ValueError(f"to() takes a device and/or a dtype; got {type(arg).__name__} {arg!r:.40}")
        if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
            raise ValueError(f"dtype must be a floating torch dtype (torch.bfloat16, ...); got {dtype!r}")
        if device is not None:
            device = torch.device(device)
            if self._offload_device is not None and device.type != "cpu":
                raise ValueError(f"model CPU offload is on (execution device {self._offload_device}): it moves each "
                                 f"component to the device while it runs; to({device}) would undo that. Load the "
                                 "pipeline again to use it without offload")
        for module in self.components.values():
            module.to(device=device, dtype=dtype)
        return self

    # progress bar -------------------------------------------------------------------------------------------------

    def set_progress_bar_config(self, **kwargs: Any) -> None:
        """tqdm settings of the decoding progress bar, e.g. `disable=True`, `desc="decoding"`, `leave=False`
        (diffusers' method). Default: a bar on a terminal, none when stderr is not one (tqdm's disable=None)."""
        self._progress_bar_config = dict(kwargs)

    def progress_bar(self, total: int):
        from tqdm.auto import tqdm

        config = {"disable": None, "desc": "decoding", "unit": "step", **(self._progress_bar_config or {})}
        return tqdm(total=total, **config)

    # model CPU offload -------------------------------------------------------------------------------------------

    def enable_model_cpu_offload(self, gpu_id: int | None = None, device: torch.device | str = "cuda") -> None:
        """Keep the components on the CPU and move each to `device` (index `gpu_id`) only while it runs (module
        docstring). `pipe.device` then reports the execution device; outputs come back on it."""
        device = torch.device(device)
        if gpu_id is not None:
            if device.index is not None and device.index != gpu_id:
                raise ValueError(f"gpu_id={gpu_id} contradicts device={device}")
            device = torch.device(device.type, gpu_id)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("enable_model_cpu_offload(device='cuda'): CUDA is not available on this machine; "
                             "offloading means something only with an accelerator (device='cpu' only runs the "
                             "bookkeeping)")
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", 0)
        for name in COMPONENTS:
            self._move(name, torch.device("cpu"))
        self._offload_device = device

    @property
    def offload_device(self) -> torch.device | None:
        """The execution device of model CPU offload, or None when it is off."""
        return self._offload_device

    @contextlib.contextmanager
    def running(self, name: str) -> Iterator[nn.Module]:
        """Component `name`, on the execution device for the block when offload is on (and back on the CPU after)."""
        module = getattr(self, name)
        if self._offload_device is None:
            yield module
            return
        self._move(name, self._offload_device)
        try:
            yield module
        finally:
            self._move(name, torch.device("cpu"))

    def _move(self, name: str, device: torch.device) -> None:
        getattr(self, name).to(device)
