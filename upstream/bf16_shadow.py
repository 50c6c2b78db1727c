"""bf16 copies of an encoder's matmul weights for no-grad bf16 inference.

Under `torch.autocast(bfloat16)` every Linear and convolution casts its fp32 weight and bias to bf16 on every call;
autocast keeps those casts only until its context exits, so each encoder call pays them again (ViT-B: ~20 % of a
10 s-clip batch on a 2-core AMX CPU, docs/performance.md). Casting them once, here, and running
the module with the copies (`torch.func.functional_call`) gives bit-identical outputs — autocast would have made the
same round-to-nearest casts — without the per-call copies. The copies are remade when any weight changes (its
tensor version or identity), so an encoder that is trained between evaluations is never seen stale.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

MATMUL_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d)


class Bf16Shadow:
    """The bf16 copies of one module's Linear / convolution parameters, keyed by their versions."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self._key: tuple[Any, ...] | None = None
        self._copies: dict[str, torch.Tensor] = {}

    def _sources(self) -> dict[str, torch.Tensor]:
        return {f"{prefix}.{name}" if prefix else name: param
                for prefix, sub in self.module.named_modules() if isinstance(sub, MATMUL_MODULES)
                for name, param in sub.named_parameters(recurse=False)}

    def weights(self) -> dict[str, torch.Tensor]:
        """Parameter name -> bf16 copy, remade when any source parameter changed since the last call."""
        sources = self._sources()
        key = tuple((name, id(p), p._version, p.device, p.dtype) for name, p in sources.items())
        if key != self._key:
            with torch.no_grad():
                self._copies = {name: p.detach().to(torch.bfloat16) for name, p in sources.items()}
            self._key = key
        return self._copies

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """`module.<method>(*args, **kwargs)` with the bf16 copies standing in for the fp32 weights."""
        copies = {f"module.{name}": copy for name, copy in self.weights().items()}
        return torch.func.functional_call(_Method(self.module, method), copies, args, kwargs)


class _Method(nn.Module):
    """Routes `forward` to one method of the wrapped module, so functional_call can run any entry point."""

    def __init__(self, module: nn.Module, method: str) -> None:
        super().__init__()
        self.module = module
        self.method = method

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.module, self.method)(*args, **kwargs)
