"""Fast paths for training and inference: channels_last, AMP (bf16, fp16), torch.compile, re-parameterisation.

From the ``speed:`` block of an option file read by the plugin's models (MRSRModel, MRSRGANModel; its keys are the
fields of :class:`SpeedOptions`, documented in docs/options.md#fast-paths-speed) and from the inference command
(``--channels-last``, ``--precision``, ``--compile``, ``--reparameterize``, ``--keep-freed-memory``). The defaults are
the fastest path that is exact in fp32 as measured on a CPU: see docs/speed.md.
"""
import contextlib
import copy
import ctypes
import ctypes.util
import functools
from dataclasses import dataclass, fields

import torch

from mrsr_plugin.errors import SpeedOptionError

AMP_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}


@dataclass(frozen=True)
class SpeedOptions:
    """The ``speed`` block of an option file (see the module docstring)."""
    channels_last: bool = True
    amp: str | None = None
    compile: bool = False
    reparameterize: str = 'fold'
    keep_freed_memory: bool = True

    @classmethod
    def from_opt(cls, block, source='speed'):
        """Validated options from the ``speed`` dict (None: the defaults); ``source`` names it in errors."""
        if block is None:
            return cls()
        if not isinstance(block, dict):
            raise SpeedOptionError(f'{source} must be a mapping of {", ".join(f.name for f in fields(cls))}, '
                                   f'got {block!r}')
        unknown = sorted(set(block) - {f.name for f in fields(cls)})
        if unknown:
            raise SpeedOptionError(f'{source}: unknown option(s) {", ".join(unknown)}; known: '
                                   f'{", ".join(f.name for f in fields(cls))}')
        options = cls(**block)
        for name in ('channels_last', 'compile', 'keep_freed_memory'):
            if not isinstance(getattr(options, name), bool):
                raise SpeedOptionError(f'{source}.{name} must be true or false, got {getattr(options, name)!r}')
        if options.amp not in (None, *AMP_DTYPES):
            raise SpeedOptionError(f'{source}.amp must be ~ (off), bf16 or fp16, got {options.amp!r}')
        # imported here: the archs import basicsr, whose registration imports the models, which import this module
        from mrsr_plugin.archs.mrdab_arch import REPARAMETERIZATIONS
        if options.reparameterize not in REPARAMETERIZATIONS:
            raise SpeedOptionError(f'{source}.reparameterize must be one of {", ".join(REPARAMETERIZATIONS)}, '
                                   f'got {options.reparameterize!r}')
        return options

    @property
    def memory_format(self):
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def configure_allocator(self, device):
        """:func:`keep_freed_memory` when asked for and ``device`` is a CPU (CUDA has its own caching allocator)."""
        if self.keep_freed_memory and torch.device(device).type == 'cpu':
            keep_freed_memory()

    def autocast(self, device):
        """torch.autocast in the AMP dtype on ``device``'s type; a no-op context without AMP."""
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(torch.device(device).type, dtype=AMP_DTYPES[self.amp])


M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)


@functools.cache
def keep_freed_memory():
    """Make glibc's malloc serve every allocation from the heap and keep freed memory for reuse; process-wide.

    By default glibc maps each allocation over 32 MiB afresh and unmaps it when freed, so every large CPU tensor of
    a forward (concatenations, upsampling outputs: 302 MB each for MRDAB x4 at batch 8) page-faults all its memory
    again; on a 2-core CPU MRDAB x4 batch 8 took 6.4 s per forward by default and 5.9 s with this (90% and 99% of
    the matmul limit, ``scripts/benchmark_speed.py --models mrdab --scales 4 [--no-keep-freed-memory]``).
    The price: the process keeps its peak memory until it exits. Idempotent.

    Returns:
        bool: Whether it applied (False where the C library is not glibc).
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or None)
        libc.gnu_get_libc_version  # noqa: B018  present in glibc only
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0) and mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


@contextlib.contextmanager
def _uncompiled(net):
    """Hide ``nn.Module.compile``'s compiled call, bound to ``net`` itself, while ``net`` is copied."""
    compiled = net.__dict__.get('_compiled_call_impl')
    net._compiled_call_impl = None
    try:
        yield
    finally:
        net._compiled_call_impl = compiled


def evaluation_network(net, options, device):
    """An evaluation copy of ``net`` (never ``net`` itself) on ``device`` with the fast paths of ``options``.

    Re-parameterised where the network offers ``reparameterized(mode)`` (MRDABNet), in ``options.memory_format``,
    compiled with ``options.compile``; in eval mode, without gradients.
    """
    with _uncompiled(net):
        reparameterize = getattr(net, 'reparameterized', None)
        if reparameterize is not None:
            copied = reparameterize(options.reparameterize)
        else:
            copied = copy.deepcopy(net)
    copied = copied.to(device, memory_format=options.memory_format).eval().requires_grad_(False)
    if options.compile:
        copied.compile()
    return copied
