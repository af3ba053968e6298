"""An Apple GPU (MPS) emulated on the CPU, so that CI machines without one can test the course on it.

`pick_device()` chooses MPS on a Mac, so the course must keep to what MPS allows. Two rules
catch real bugs: MPS has no float64 (`x.double()` on the GPU raises), and an op may not mix
GPU tensors with CPU tensors other than 0-d scalars and indices (as on CUDA).

Inside `emulated_mps()`, a tensor moved "to mps" is a CPU tensor in a wrapper whose
`.device` says mps. Every op on it runs on the CPU after those checks, so results equal the
CPU's bit for bit. Autograd is not emulated: recording a graph makes torch look for a real
MPS device and abort the process, so everything inside runs under torch.no_grad() and asking
for a gradient raises a clear error instead. Tests only.
"""

from __future__ import annotations

import contextlib
import functools

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

MPS = torch.device("mps")
CPU = torch.device("cpu")
NO_AUTOGRAD = "the emulated MPS device has no autograd: test gradients on the CPU"
NO_FLOAT64 = "Cannot convert a MPS Tensor to float64 dtype as the MPS framework doesn't support float64. Please use float32 instead."
# Ops that take CPU tensors beside GPU tensors on a real device: indexing, and copies between devices.
MIXED_DEVICES_ALLOWED = ("aten.index.", "aten.index_put", "aten._index_put_impl_", "aten.copy_", "aten._to_copy", "aten.to.", "aten.lift_fresh")


def unwrap(tree):
    return tree_map(lambda a: a.inner if isinstance(a, OnMPS) else a, tree)


def wrap(tree):
    return tree_map(lambda o: OnMPS(o) if isinstance(o, torch.Tensor) and not isinstance(o, OnMPS) else o, tree)


def is_mps(device) -> bool:
    return isinstance(device, (str, torch.device)) and torch.device(device).type == "mps"


def check_same_device(name: str, values) -> None:
    """A GPU op refuses CPU tensors, except 0-d ones (scalars)."""
    tensors = [a for a in tree_flatten(values)[0] if isinstance(a, torch.Tensor)]
    if any(isinstance(a, OnMPS) for a in tensors) and any(not isinstance(a, OnMPS) and a.dim() > 0 for a in tensors):
        raise RuntimeError(f"{name}: expected all tensors to be on the same device, but found at least two devices, mps:0 and cpu!")


class OnMPS(torch.Tensor):
    """A CPU tensor that says it lives on the (emulated) Apple GPU."""

    @staticmethod
    def __new__(cls, inner: torch.Tensor):
        if inner.dtype == torch.float64:
            raise TypeError(NO_FLOAT64)
        return torch.Tensor._make_wrapper_subclass(cls, inner.shape, strides=inner.stride(), storage_offset=inner.storage_offset(),
                                                   dtype=inner.dtype, device=MPS, requires_grad=inner.requires_grad)

    def __init__(self, inner: torch.Tensor):
        self.inner = inner

    def __repr__(self):
        return f"OnMPS({self.inner!r})"

    def __tensor_flatten__(self):
        return ["inner"], None

    @staticmethod
    def __tensor_unflatten__(inner_tensors, meta, outer_size, outer_stride):
        return OnMPS(inner_tensors["inner"])

    def numpy(self, *args, **kwargs):
        raise TypeError("can't convert mps:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor to host memory first.")

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        name = str(func)
        if not name.startswith(MIXED_DEVICES_ALLOWED):
            check_same_device(name, (args, kwargs))
        devices = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.device)]
        to_cpu = name.startswith(("aten._to_copy", "aten.to.")) and any(d.type == "cpu" for d in devices)
        if is_mps(kwargs.get("device")):
            kwargs["device"] = CPU
        out = func(*unwrap(args), **unwrap(kwargs))
        return out if to_cpu else wrap(out)


# Calls that torch's C++ would route to a real MPS device before dispatch reaches OnMPS.
READ_BY_HOST = {torch.Tensor.__int__, torch.Tensor.__float__, torch.Tensor.__bool__, torch.Tensor.__index__,
                torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__format__}
RUN_UNWRAPPED = {torch.nn.functional.scaled_dot_product_attention, torch._C._nn.scaled_dot_product_attention}


class EmulatedMPS(TorchFunctionMode):
    """Turns device="mps" into CPU work on OnMPS tensors, and refuses autograd."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in (torch.Tensor.backward, torch.autograd.grad, torch.autograd.backward):
            raise NotImplementedError(NO_AUTOGRAD)
        if func is torch.Tensor.to:
            return self.move(args, kwargs)
        flat = tree_flatten((args, kwargs))[0]
        if func in (torch.Tensor.__getitem__, torch.Tensor.__setitem__) and not isinstance(args[0], OnMPS):
            if any(isinstance(a, OnMPS) for a in tree_flatten(args[1])[0]):
                raise RuntimeError("indices should be either on cpu or on the same device as the indexed tensor (cpu)")
        if any(isinstance(a, OnMPS) for a in flat):
            if func in READ_BY_HOST:
                return func(*unwrap(args), **kwargs)  # a copy to the host, as on the real device
            if func is torch.Tensor.__getitem__:  # the index may be a CPU tensor, as on the real device
                return wrap(func(*unwrap(args)))
            if func is torch.Tensor.__setitem__:
                check_same_device("__setitem__", (args[0], args[2]))  # the value must be on the GPU too
                return func(*unwrap(args))
            if func is torch.Tensor.copy_:
                args[0].inner.copy_(unwrap(args[1]))
                return args[0]
            if func in RUN_UNWRAPPED:
                check_same_device(func.__name__, (args, kwargs))
                return wrap(func(*unwrap(args), **unwrap(kwargs)))
        if is_mps(kwargs.get("device")):  # factories: torch.zeros(..., device="mps")
            generator = kwargs.get("generator")
            if generator is not None and generator.device.type != "mps":
                raise RuntimeError("Expected a 'mps' device type for generator but found 'cpu'")
            kwargs["device"] = CPU
            return wrap(func(*args, **kwargs))
        return func(*args, **kwargs)

    @staticmethod
    def move(args, kwargs):
        """Tensor.to(...): onto the emulated GPU, or anywhere else as usual."""
        device = kwargs.get("device")
        for a in args[1:]:
            if isinstance(a, (str, torch.device)):
                device = a
            elif isinstance(a, torch.Tensor):  # x.to(other): other's device and dtype
                device = a.device
        if not is_mps(device):
            return torch.Tensor.to(*args, **kwargs)
        on_cpu = [CPU if isinstance(a, (str, torch.device)) else a.dtype if isinstance(a, torch.Tensor) else a for a in args[1:]]
        return wrap(unwrap(args[0]).to(*on_cpu, **{key: CPU if key == "device" else value for key, value in kwargs.items()}))


set_grad_enabled = torch._C._set_grad_enabled


def refuse_gradients(enabled: bool) -> None:
    if enabled:
        raise NotImplementedError(NO_AUTOGRAD)
    set_grad_enabled(False)


@contextlib.contextmanager
def emulated_mps():
    """Inside: torch.backends.mps.is_available() is True and device="mps" works, on the CPU, without gradients."""
    original = torch.backends.mps.is_available
    torch.backends.mps.is_available = functools.wraps(original)(lambda: True)  # torch._dynamo reads __wrapped__
    try:
        with torch.no_grad():
            torch._C._set_grad_enabled = refuse_gradients  # what torch.enable_grad() calls
            try:
                with EmulatedMPS():
                    yield MPS
            finally:
                torch._C._set_grad_enabled = set_grad_enabled
    finally:
        torch.backends.mps.is_available = original
