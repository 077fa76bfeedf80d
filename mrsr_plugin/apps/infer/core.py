"""Format-independent core of inference: build a generator from its options, load its weights, and upscale
normalised slices (after Real-ESRGAN's ``RealESRGANer``: one small class that holds a network and upscales arrays).

:func:`load_generator` builds ``network_g`` from an option file, ``--arch-args`` JSON or the weights manifest, loads
the checkpoint strictly (one line naming the first missing / unexpected keys otherwise) and checks the scale;
:class:`Upscaler` runs it on (N, H, W) slices normalised as the training data were
(:func:`mrsr_plugin.apps.prepare.normalise`), in batches and optionally in tiles, keeping the intensities outside the
normalisation window. The per-format readers and writers (:mod:`mrsr_plugin.apps.infer.dicom`,
:mod:`mrsr_plugin.apps.infer.images`) and the command line (:mod:`mrsr_plugin.apps.infer.run`) sit on top.
"""
import copy
import inspect
import json
import math
import sys

import numpy as np
import torch
from basicsr.archs import build_network
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from mrsr_plugin.compat import load_checkpoint
from mrsr_plugin.errors import MRSRUserError, first_line
from mrsr_plugin.options import load_options
from mrsr_plugin.speed import SpeedOptions, evaluation_network
from mrsr_plugin.weights import resolve as resolve_weights

PROBE_SIZE = 16  # side of the zero input that measures the network's scale and output channels


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


def _read_state_dict(weights, param_key):
    """BasicSR checkpoint -> state dict: ``param_key``, else params_ema if present, else params, else the file
    itself when it is a bare state dict; the ``module.`` prefix of DDP checkpoints is dropped."""
    checkpoint = load_checkpoint(weights)
    if not isinstance(checkpoint, dict):
        raise MRSRUserError(f'{weights}: not a BasicSR checkpoint (a {type(checkpoint).__name__}, not a dict)')
    if param_key is None:
        param_key = next((k for k in ('params_ema', 'params') if k in checkpoint), None)
    if param_key is None and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        state = checkpoint
    elif param_key in checkpoint and isinstance(checkpoint[param_key], dict):
        state = checkpoint[param_key]
    else:
        raise MRSRUserError(f'{weights}: no weights under {param_key or "params_ema or params"} '
                            f'(keys: {", ".join(map(str, list(checkpoint)[:5]))})')
    return {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}


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
        precision (str): 'fp32', or the autocast dtype 'bf16' or 'fp16'. Default: 'fp32'.
        tile (int): Tile size in input pixels; 0: whole slices. Default: 0.
        overlap (int): Context pixels around each tile. Default: 32.
        batch (int): Slices per forward pass. Default: 4.
        channels_last (bool): Network and input in torch.channels_last. Default: True.
        compile (bool): torch.compile the network. Default: False.
        reparameterize (str): 'none', 'fold' or 'merge' for networks that offer it (MRDABNet). Default: 'fold'.
        keep_freed_memory (bool): On a CPU, :func:`mrsr_plugin.speed.keep_freed_memory`. Default: True.

    The network runs as :func:`mrsr_plugin.speed.evaluation_network` makes it from ``net``: a copy, ``net`` itself
    is left as it is.
    """

    def __init__(self, net, device, in_ch=None, precision='fp32', tile=0, overlap=32, batch=4, channels_last=True,
                 compile=False, reparameterize='fold', keep_freed_memory=True):
        self.speed = SpeedOptions(channels_last=channels_last, amp=None if precision == 'fp32' else precision,
                                  compile=compile, reparameterize=reparameterize, keep_freed_memory=keep_freed_memory)
        self.speed.configure_allocator(device)
        self.in_ch = in_ch or next((m.in_channels for m in net.modules() if isinstance(m, nn.Conv2d)), 1)
        self.net = evaluation_network(net, self.speed, device)
        self.device, self.tile, self.overlap, self.batch = device, tile, overlap, batch
        if self.in_ch not in (1, 3):
            raise MRSRUserError(f'the network takes {self.in_ch} input channels; 1 or 3 are supported')
        with torch.no_grad():
            probe = self.net(torch.zeros(1, self.in_ch, PROBE_SIZE, PROBE_SIZE, device=device)).shape
        if probe[1] not in (1, 3):
            raise MRSRUserError(f'the network returns {probe[1]} channels; 1 or 3 are supported')
        if probe[-2] != probe[-1] or probe[-1] % PROBE_SIZE:
            raise MRSRUserError(f'the network maps {PROBE_SIZE}x{PROBE_SIZE} to {probe[-2]}x{probe[-1]}, not an '
                                'integer upscale')
        self.scale = probe[-1] // PROBE_SIZE

    @torch.no_grad()
    def forward(self, x):
        """(B, 1, h, w) float32 on the CPU -> (B, 1, s*h, s*w) float32 on the CPU, not clipped.

        A 1-channel slice is repeated for 3-channel networks; 3 output channels are averaged.
        """
        x = x.to(self.device).expand(-1, self.in_ch, -1, -1).contiguous(memory_format=self.speed.memory_format)
        with self.speed.autocast(self.device):
            y = self.net(x)
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

        The network sees the slices clipped to [0, 1]; what the clip removes (``x - clip(x, 0, 1)``, the
        intensities outside the normalisation window) is upsampled bilinearly (align_corners=False, the grid of
        the network's output) and added to the network's output clipped to [0, 1], so none of it is lost.

        Args:
            slices (ndarray): (N, H, W), normalised: the window is [0, 1], values outside it are kept.

        Yields:
            ndarray: float32 (B, s*H, s*W); in [0, 1] where the slices are.
        """
        with tqdm(total=len(slices), desc=desc, unit='slice', disable=quiet, file=sys.stderr) as bar:
            for start in range(0, len(slices), self.batch):
                x = torch.from_numpy(np.asarray(slices[start:start + self.batch], np.float32))[:, None]
                inside = x.clamp(0, 1)
                outside = F.interpolate(x - inside, scale_factor=self.scale, mode='bilinear', align_corners=False)
                yield (self.tiled(inside).clamp_(0, 1) + outside)[:, 0].numpy()
                bar.update(len(x))


def input_channels(net, network_g):
    """network_g's num_in_ch, else the default of ``net``'s class, else None (:class:`Upscaler` then asks the first
    convolution)."""
    defaults = inspect.signature(type(net)).parameters
    return network_g.get('num_in_ch', defaults['num_in_ch'].default if 'num_in_ch' in defaults else None)


def load_generator(weights, opt_path=None, arch_args=None, param_key=None, scale=None, **upscaler_args):
    """Build network_g, load the checkpoint strictly and check the scale.

    Args:
        weights (str): BasicSR checkpoint, or a name of the weights manifest (:func:`mrsr_plugin.weights.resolve`).
        opt_path (str): Option file whose network_g builds the network; or
        arch_args (str): network_g as JSON; neither: the manifest entry's network_g (weights given by name).
        param_key (str): Checkpoint key; default params_ema if present, else params.
        scale (int): Expected scale; default network_g.upscale, else the option file's scale.
        upscaler_args: :class:`Upscaler`'s arguments but in_ch, which is network_g's
            num_in_ch (or the network's default).

    Returns:
        tuple[Upscaler, str]: The generator and its network type.
    """
    weights, entry = resolve_weights(weights)
    if opt_path is None and arch_args is None:
        if entry is None:
            raise MRSRUserError(f'{weights}: a checkpoint file needs -opt or --arch-args for its network (weights '
                                'given by name take network_g from the manifest)')
        arch_args = json.dumps(entry['network_g'])
    network_g, opt_scale, source = _read_network_options(opt_path, arch_args)
    arch = network_g['type']
    try:
        net = build_network(copy.deepcopy(network_g))
    except (KeyError, TypeError, ValueError) as err:
        raise MRSRUserError(f'{source}: cannot build network_g {arch} ({first_line(err)})') from err
    state = _read_state_dict(weights, param_key)
    _check_state_dict(net, state, weights, source, arch)
    net.load_state_dict(state, strict=True)
    upscaler = Upscaler(net, in_ch=input_channels(net, network_g), **upscaler_args)
    if scale:
        expected, said_by = scale, '--scale'
    elif network_g.get('upscale'):
        expected, said_by = network_g['upscale'], f'network_g.upscale of {source}'
    else:
        expected, said_by = opt_scale, f'scale of {source}'
    if expected and expected != upscaler.scale:
        raise MRSRUserError(f'{weights}: the network upscales x{upscaler.scale}, but {said_by} says x{expected}')
    return upscaler, arch
