"""Count the operations of a call that, on a GPU, make the host wait or copy host data.

On CPU there is no device to wait for, so the step's host-device syncs cannot be timed here;
they can be seen: every sync comes from one of a few ATen operators (reading a value with
`.item()`/`bool()`, a data-dependent shape such as boolean indexing or `nonzero`), and every
host-to-device copy of Python data from `torch.tensor(list)` (`lift_fresh`). A dispatch mode
records the operators a call runs, so a test can assert the count is zero. `Tensor.tolist()`
reads memory without dispatching an operator, so `record` counts its calls separately.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

SYNC_OPS = {"aten._local_scalar_dense", "aten.nonzero", "aten.masked_select", "aten.unique",
            "aten._unique2", "aten.repeat_interleave", "Tensor.tolist"}
HOST_DATA_OPS = {"aten.lift_fresh"}


def _name(func: Any) -> str:
    return str(func.overloadpacket) if hasattr(func, "overloadpacket") else str(func)


class OperatorLog(TorchDispatchMode):
    """Records every ATen call (name, and whether it indexes with a boolean mask)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        name = _name(func)
        if name == "aten.index" and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] if len(args) > 1 else [])
        ):
            name = "aten.index(bool)"  # lowers to nonzero on a GPU
        self.calls[name] += 1
        return func(*args, **(kwargs or {}))

    @property
    def syncs(self) -> int:
        return sum(n for op, n in self.calls.items() if op in SYNC_OPS or op == "aten.index(bool)")

    @property
    def host_data_copies(self) -> int:
        return sum(n for op, n in self.calls.items() if op in HOST_DATA_OPS)

    @property
    def launches(self) -> int:
        return sum(self.calls.values())


def record(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, OperatorLog]:
    log = OperatorLog()
    tolist = torch.Tensor.tolist

    def counted_tolist(self: torch.Tensor) -> Any:
        log.calls["Tensor.tolist"] += 1
        return tolist(self)

    torch.Tensor.tolist = counted_tolist  # type: ignore[method-assign]
    try:
        with log:
            out = fn(*args, **kwargs)
    finally:
        torch.Tensor.tolist = tolist  # type: ignore[method-assign]
    return out, log
