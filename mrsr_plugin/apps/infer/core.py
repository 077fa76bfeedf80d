"""Format-independent core of inference: build a generator from its checkpoint, load its weights, and upscale
normalised slices (after Real-ESRGAN's ``RealESRGANer``: one small class that holds a network and upscales arrays).

Above it: the per-format writers and the run (:mod:`mrsr_plugin.apps.infer`).
"""
import copy
import json
import math
import sys

import numpy as np
import torch
from basicsr.archs import build_network
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from mrsr_plugin import checkpoint
from mrsr_plugin.errors import MRSRUserError, first_line
from mrsr_plugin.mrio.intensity import DEFAULT_NORMALIZE, DEFAULT_PERCENTILES
from mrsr_plugin.options import load_options
from mrsr_plugin.speed import SpeedOptions, evaluation_network
from mrsr_plugin.weights import resolve as resolve_weights

PROBE_SIZE = 16  # side of the zero input that measures the scale of a network given without one
# slices per forward when not given: on a CPU batching is no faster per slice (docs/speed.md) and every slice in the
# batch adds its activations to the peak memory (0.4 GB for a 384x384 slice through the demo generator at x2), so
# one; on a GPU a few, to fill it
DEFAULT_BATCH = {'cpu': 1, 'cuda': 4}


def choose_device(name):
    """'auto', 'cpu' or 'cuda' -> torch.device; auto is CUDA when available. MRSRUserError for cuda without one."""
    if name == 'cuda' and not torch.cuda.is_available():
        raise MRSRUserError('--device cuda: no CUDA device available')
    return torch.device('cuda' if name != 'cpu' and torch.cuda.is_available() else 'cpu')


def _read_network_options(opt_path, arch_args):
    """-opt file or --arch-args JSON -> (network_g dict, the option file's top-level scale or None, source name)."""
    if opt_path is None:
        try:
            opt = {'network_g': json.loads(arch_args)}
        except json.JSONDecodeError as err:
            raise MRSRUserError(f'--arch-args: not valid JSON ({err})') from err
        source = '--arch-args'
    else:
        opt = load_options(opt_path)  # composed files too; MRSRUserError naming the file
        source = opt_path
    network_g = opt.get('network_g') if isinstance(opt, dict) else None
    if not isinstance(network_g, dict) or 'type' not in network_g:
        raise MRSRUserError(f'{source}: no network_g with a type')
    return network_g, opt.get('scale'), source


def _listed(keys, limit=3):
    keys = list(keys)
    return ', '.join(keys[:limit]) + (f' (+{len(keys) - limit} more)' if len(keys) > limit else '')


def _check_state_dict(net, state, weights, source, arch):
    """Raise MRSRUserError naming the first missing / unexpected keys and shape mismatches, if any."""
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [k for k, v in expected.items() if k in state and state[k].shape != v.shape]
    found = {
        'missing keys': missing,
        'unexpected keys': unexpected,
        'shape mismatches (checkpoint vs network)':
        [f'{k} {list(state[k].shape)} vs {list(expected[k].shape)}' for k in reshaped]
    }
    problems = [f'{name}: {_listed(keys)}' for name, keys in found.items() if keys]
    if problems:
        hint = ('; only the upsampling layers differ: was it trained for another scale?'
                if all('upsample' in k for k in missing + unexpected + reshaped) else '')
        raise MRSRUserError(f'{weights} does not fit network_g ({arch}) of {source}: {"; ".join(problems)}{hint}')


class Upscaler:
    """A generator ready for inference on normalised slices, in batches and optionally in tiles.

    Tiling: the slice is cut into a grid of at most ``tile`` x ``tile`` pixels (near-equal tiles); each runs with
    ``overlap`` pixels of context on every side (fewer at the slice border, where untiled inference sees the same
    zero padding) and only its own part of the output is kept, so neighbouring windows overlap by 2 * overlap and
    the kept parts abut. For a fully convolutional network whose receptive-field radius (in input pixels) is at
    most ``overlap``, every kept pixel sees exactly the input it sees untiled, so the result equals untiled
    inference up to float rounding and no blending is needed; networks with global pooling (MRDABNet's PCAM / DPAM
    channel attention) see each window's statistics, so tiles differ slightly from an untiled run.

    Args:
        net (nn.Module): (B, C_in, H, W) -> (B, C_out, s*H, s*W), C_in and C_out 1 or 3.
        device (torch.device): Where the network runs.
        in_ch (int): Input channels; None: those of the first convolution. Default: None.
        scale (int): The network's upscale, checked on every output; None: measured by one forward pass of zeros.
            Default: None.
        precision (str): 'fp32', or the autocast dtype 'bf16' or 'fp16'. Default: 'fp32'.
        tile (int): Tile size in input pixels; 0: whole slices. Default: 0.
        overlap (int): Context pixels around each tile. Default: 32.
        batch (int | None): Slices per forward pass; None: :data:`DEFAULT_BATCH` of the device type. Default: None.
        channels_last (bool): Network and input in torch.channels_last. Default: True.
        compile (bool): torch.compile the network. Default: False.
        reparameterize (str): 'none', 'fold' or 'merge' for networks that offer it (MRDABNet). Default: 'fold'.
        keep_freed_memory (bool): On a CPU, :func:`mrsr_plugin.speed.keep_freed_memory`. Default: True.

    The network runs as :func:`mrsr_plugin.speed.evaluation_network` makes it from ``net``: a copy, ``net`` itself
    is left as it is.
    """

    def __init__(self, net, device, in_ch=None, scale=None, precision='fp32', tile=0, overlap=32, batch=None,
                 channels_last=True, compile=False, reparameterize='fold', keep_freed_memory=True):
        self.speed = SpeedOptions(channels_last=channels_last, amp=None if precision == 'fp32' else precision,
                                  compile=compile, reparameterize=reparameterize, keep_freed_memory=keep_freed_memory)
        self.speed.configure_allocator(device)
        self.in_ch = in_ch or next((m.in_channels for m in net.modules() if isinstance(m, nn.Conv2d)), 1)
        self.net = evaluation_network(net, self.speed, device)
        self.device, self.tile, self.overlap = device, tile, overlap
        self.batch = batch or DEFAULT_BATCH.get(torch.device(device).type, DEFAULT_BATCH['cuda'])
        self.info = {}  # the checkpoint's mrsr block, where load_generator made it from one
        if self.in_ch not in (1, 3):
            raise MRSRUserError(f'the network takes {self.in_ch} input channels; 1 or 3 are supported')
        if scale is None:
            with torch.no_grad():
                probe = self.net(torch.zeros(1, self.in_ch, PROBE_SIZE, PROBE_SIZE, device=device)).shape
            if probe[-2] != probe[-1] or probe[-1] % PROBE_SIZE:
                raise MRSRUserError(f'the network maps {PROBE_SIZE}x{PROBE_SIZE} to {probe[-2]}x{probe[-1]}, not an '
                                    'integer upscale')
            scale = probe[-1] // PROBE_SIZE
        self.scale = scale

    @torch.no_grad()
    def forward(self, x):
        """(B, 1, h, w) float32 on the CPU -> (B, 1, s*h, s*w) float32 on the CPU, not clipped.

        A 1-channel slice is repeated for 3-channel networks; 3 output channels are averaged.
        """
        x = x.to(self.device).expand(-1, self.in_ch, -1, -1).contiguous(memory_format=self.speed.memory_format)
        with self.speed.autocast(self.device):
            y = self.net(x)
        if y.shape[1] not in (1, 3) or y.shape[-2:] != (self.scale * x.shape[-2], self.scale * x.shape[-1]):
            raise MRSRUserError(f'the network maps {x.shape[-2]}x{x.shape[-1]} to {y.shape[1]} channel(s) of '
                                f'{y.shape[-2]}x{y.shape[-1]}; expected 1 or 3 channels at x{self.scale}')
        return y.float().mean(dim=1, keepdim=True).cpu()

    def tiled(self, x):
        """:meth:`forward` over tiles with context (see the class docstring); same shapes."""
        h, w = x.shape[-2:]
        if self.tile <= 0 or (h <= self.tile and w <= self.tile):
            return self.forward(x)
        s, pad = self.scale, self.overlap
        rows, cols = (np.linspace(0, n, math.ceil(n / self.tile) + 1).round().astype(int) for n in (h, w))
        out = torch.empty(x.shape[0], 1, s * h, s * w)
        for y0, y1 in zip(rows[:-1], rows[1:]):
            for x0, x1 in zip(cols[:-1], cols[1:]):
                wy0, wx0 = max(y0 - pad, 0), max(x0 - pad, 0)
                window = self.forward(x[..., wy0:min(y1 + pad, h), wx0:min(x1 + pad, w)])
                out[..., s * y0:s * y1, s * x0:s * x1] = window[..., s * (y0 - wy0):s * (y1 - wy0),
                                                                s * (x0 - wx0):s * (x1 - wx0)]
        return out

    def batches(self, slices, desc='', quiet=False):
        """Yield the super-resolved slices in order, a batch at a time.

        A batch holds at most ``batch`` consecutive slices of one shape: slices of several sizes (a test set from
        several scanners or protocols) are upscaled each at its own size, a batch ending where the size changes.

        The network sees the slices clipped to [0, 1]; what the clip removes (``x - clip(x, 0, 1)``, the
        intensities outside the normalisation window) is upsampled bilinearly (align_corners=False, the grid of
        the network's output) and added to the network's output clipped to [0, 1], so none of it is lost.

        Args:
            slices (ndarray | sequence[ndarray]): (N, H, W), or N arrays (H_i, W_i); normalised: the window is
                [0, 1], values outside it are kept.

        Yields:
            ndarray: float32 (B, s*H, s*W) of one shape; in [0, 1] where the slices are.
        """
        with tqdm(total=len(slices), desc=desc, unit='slice', disable=quiet, file=sys.stderr) as bar:
            start = 0
            while start < len(slices):
                stop, shape = start + 1, np.shape(slices[start])
                while stop < min(start + self.batch, len(slices)) and np.shape(slices[stop]) == shape:
                    stop += 1
                x = torch.from_numpy(np.asarray(slices[start:stop], np.float32))[:, None]
                start = stop
                inside = x.clamp(0, 1)
                outside = F.interpolate(x - inside, scale_factor=self.scale, mode='bilinear', align_corners=False)
                yield (self.tiled(inside).clamp_(0, 1) + outside)[:, 0].numpy()
                bar.update(len(x))


def input_channels(net, network_g):
    """network_g's num_in_ch, else the default of ``net``'s class, else None (:class:`Upscaler` then asks the first
    convolution)."""
    return checkpoint.network_channels(net, network_g)[0]


def _warn(line):
    print(line, file=sys.stderr)


def _differences(mine, theirs):
    keys = sorted(set(mine) | set(theirs), key=lambda k: (k != 'type', k))
    return ', '.join(f'{k} {mine.get(k)} vs {theirs.get(k)}' for k in keys if mine.get(k) != theirs.get(k))


def load_generator(weights, opt_path=None, arch_args=None, param_key=None, scale=None, warn=_warn, **upscaler_args):
    """Build network_g, load the checkpoint strictly and take its scale.

    Args:
        weights (str): BasicSR checkpoint, or a name of the weights manifest (:func:`mrsr_plugin.weights.resolve`).
        opt_path (str): Option file whose network_g (and upscale, else scale) to use instead of the checkpoint's
            ``mrsr`` block; or
        arch_args (str): network_g as JSON. Either is needed for a checkpoint without the block; either wins over
            the block, with a warning where their network_g differs from it.
        param_key (str): Checkpoint key; default params_ema if present, else params.
        scale (int): The upscale, for a network whose network_g and option file give none; one line of error where
            they give another.
        warn (callable): Receives the one-line warnings. Default: print to stderr.
        upscaler_args: :class:`Upscaler`'s arguments but in_ch and scale.

    Returns:
        tuple[Upscaler, str]: The generator, whose ``info`` is the checkpoint's ``mrsr`` block ({} without one),
        and its network type.
    """
    path, _ = resolve_weights(weights)
    state, info = checkpoint.read(path, param_key)
    if opt_path is None and arch_args is None:
        if info is None:
            raise MRSRUserError(checkpoint.missing(path, 'network_g', '-opt or --arch-args'))
        network_g, known, source, said_by = info['network_g'], info['scale'], path, f'the {checkpoint.KEY} block of'
    else:
        network_g, opt_scale, source = _read_network_options(opt_path, arch_args)
        known = network_g.get('upscale') or opt_scale
        said_by = 'network_g.upscale of' if network_g.get('upscale') else 'scale of'
        if info is not None and network_g != info['network_g']:
            warn(f'warning: network_g of {source} contradicts the one {weights} was trained with '
                 f'({_differences(network_g, info["network_g"])}: {source} vs checkpoint); using {source}')
    if scale and known and scale != known:
        raise MRSRUserError(f'{weights}: the network upscales x{known} ({said_by} {source}), but --scale says '
                            f'x{scale}')
    arch = network_g['type']
    try:
        net = build_network(copy.deepcopy(network_g))
    except (KeyError, TypeError, ValueError) as err:
        raise MRSRUserError(f'{source}: cannot build network_g {arch} ({first_line(err)})') from err
    _check_state_dict(net, state, path, source, arch)
    net.load_state_dict(state, strict=True)
    upscaler = Upscaler(net, in_ch=input_channels(net, network_g), scale=known or scale, **upscaler_args)
    upscaler.info = info or {}
    return upscaler, arch


def intensity_window(normalize, percentiles, info, weights, warn=_warn):
    """The intensity normalisation to apply: ``normalize`` / ``percentiles`` where given (a warning where they
    contradict the checkpoint's), else the training data's from the ``mrsr`` block ``info``, else percentile
    0.5 / 99.5.

    Returns:
        tuple[str, list[float]]: The method and the percentiles.
    """
    stored = info.get('normalization') or {}
    method, note = checkpoint.choose('--normalize', normalize, stored.get('method'), DEFAULT_NORMALIZE, weights)
    given = None if percentiles is None else [float(p) for p in percentiles]
    window, window_note = checkpoint.choose('--percentiles', given, stored.get('percentiles'),
                                            list(DEFAULT_PERCENTILES), weights)
    for line in (note, window_note):
        if line:
            warn(line)
    return method, window
