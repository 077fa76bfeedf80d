"""MRDAB generator of the paper (section 2.1, Fig. 2(a); MSRDB section 2.2, Fig. 3; DPAM section 2.3).

Where the paper is silent, the choices are stated here and in the docstrings:
- an MSRDB has ``num_groups`` multi-scale convolution groups (MSCGs, default 7) and ends in a 3x3 local fusion
  convolution back to ``num_feat`` channels plus the block's input (local residual);
- the global fusion of eq. (3) is one 3x3 convolution from ``(N + 1) * num_feat`` to ``num_feat`` channels ("combined
  and calculated by the convolution layer"), without activation;
- the sub-pixel convolutions start as nearest-neighbour upsampling (ICNR, :func:`.arch_util.icnr_`), which removes
  the checkerboard of independently initialised sub-pixel kernels; it changes the initial weights only;
- with these defaults, x4, 8 blocks and 3 input channels the generator has 17,992,683 parameters, 2.2% under the
  1.84e7 of Table 4 (``tests/test_mrdab_arch.py`` checks the 3% bound). Other readings miss it: eight MSCGs with
  1x1 local fusion give 2.06e7 (+12%), seven with 1x1 local fusion 1.64e7 (-11%).

Inference-time re-parameterisation (:meth:`MRDABNet.reparameterized`) returns a copy with the same function and
fewer operations: 'fold' sums SAM's three convolutions into one, for dense blocks folds the local residual into
the fusion convolution (the block input is the last ``num_feat`` channels of its concatenation, so ``x + Conv(G)``
is ``Conv'(G)`` with 1 added at the centre tap of those channels), and moves the last convolution before the last
pixel shuffle (:func:`conv_before_shuffle`; the largest feature map of a forward, ``num_feat`` channels at the output
size, is never made: 0.3 GB per 384x384 input slice at x4); 'merge' also turns each MSCG's K convolutions into
one ``k_max x k_max`` convolution with the smaller kernels zero-padded to the largest. 'merge' costs
``K * k_max^2 / sum(k^2)`` times the MACs of the MSCGs (147 / 83 = 1.77 for 3, 5, 7) for one wide convolution
instead of K narrow ones: measured slower on a CPU (see README, Speed).
"""
import copy
import functools

import torch
from basicsr.archs.arch_util import Upsample, default_init_weights
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn as nn
from torch.nn import functional as F


from .arch_util import icnr_init_subpixel_convs
from .attention import DualParallelAttention, pad_kernel

CONNECTIONS = ('dense', 'residual')
GLOBAL_SKIPS = ('none', 'bicubic')
REPARAMETERIZATIONS = ('none', 'fold', 'merge')  # MRDABNet.reparameterized


class ConcatWorkspace:
    """Two ping-pong buffers for the dense concatenations of one inference forward, shared by all its blocks.

    G_{i+1} = Concat(H_i, G_i) only needs G_i, so concatenation i can overwrite the memory of concatenation i - 2,
    and a block's concatenations are dead once its fusion convolution has run. On a CPU this matters: each fresh
    tensor over glibc's mmap threshold (32 MiB: a 192x192 G_i beyond 218 channels) is new memory whose page faults
    cost several times the copy (measured: 39 ms to allocate and fill a 59 MB concatenation that ``torch.cat(out=)``
    fills in 2.4 ms). Only without autograd, which keeps every G_i for the backward pass.
    """

    def __init__(self):
        self.buffers = {}  # (index % 2, dtype, device) -> flat tensor, grown on demand

    def cat(self, index, parts):
        """``torch.cat(parts, dim=1)`` written into ping-pong buffer ``index % 2``; same memory format as parts[0]."""
        first = parts[0]
        batch, _, height, width = first.shape
        channels = sum(p.shape[1] for p in parts)
        dtype = functools.reduce(torch.promote_types, (p.dtype for p in parts))
        key = (index % 2, dtype, first.device)
        numel = batch * channels * height * width
        flat = self.buffers.get(key)
        if flat is None or flat.numel() < numel:
            flat = self.buffers[key] = torch.empty(numel, dtype=dtype, device=first.device)
        if first.is_contiguous(memory_format=torch.channels_last) and not first.is_contiguous():
            out = flat[:numel].view(batch, height, width, channels).permute(0, 3, 1, 2)
        else:
            out = flat[:numel].view(batch, channels, height, width)
        return torch.cat(parts, dim=1, out=out)


def conv_before_shuffle(conv, factor):
    """The convolution that, applied before ``PixelShuffle(factor)``, equals ``conv`` applied after it.

    ``conv`` (C -> O channels, 3x3, padding 1) sees, around output pixel (factor h + i, factor w + j), shuffled pixels
    that come from LR pixels h + (i + dy) // factor (dy in -1..1), channel ``c * factor^2 + ((i + dy) % factor) *
    factor + ...``: a 3x3 convolution from C factor^2 to O factor^2 channels with padding 1 on the LR grid. Zero
    padding outside the image maps to zero padding outside the LR grid, so it is exact up to float rounding; the
    s x s-size C-channel map after the shuffle is never made.
    """
    if conv.kernel_size != (3, 3) or conv.padding != (1, 1) or conv.stride != (1, 1) or conv.dilation != (1, 1):
        raise ValueError(f'expected a 3x3 convolution with padding 1, got {conv}')
    r, out_ch, in_ch = factor, conv.out_channels, conv.in_channels
    weight = conv.weight.new_zeros(out_ch * r * r, in_ch * r * r, 3, 3)
    for i in range(r):
        for j in range(r):
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    (ey, si), (ex, sj) = divmod(i + dy, r), divmod(j + dx, r)
                    weight[i * r + j::r * r, si * r + sj::r * r, ey + 1, ex + 1] += conv.weight[:, :, dy + 1, dx + 1]
    folded = nn.Conv2d(in_ch * r * r, out_ch * r * r, 3, padding=1, bias=conv.bias is not None).to(conv.weight)
    with torch.no_grad():
        folded.weight.copy_(weight)
        if conv.bias is not None:
            folded.bias.copy_(conv.bias.repeat_interleave(r * r))
    return folded


def merged_conv(convs):
    """One convolution equal to the concatenated outputs of ``convs`` (same input, odd kernels, padding k // 2)."""
    size = max(conv.kernel_size[0] for conv in convs)
    first = convs[0]
    merged = nn.Conv2d(first.in_channels, sum(conv.out_channels for conv in convs), size, padding=size // 2,
                       bias=first.bias is not None).to(first.weight)
    with torch.no_grad():
        merged.weight.copy_(torch.cat([pad_kernel(conv.weight, size) for conv in convs]))
        if first.bias is not None:
            merged.bias.copy_(torch.cat([conv.bias for conv in convs]))
    return merged


class MultiScaleConvGroup(nn.Module):
    """MSCG, eq. (5): parallel ``k x k`` convolutions + ReLU, each ``in_ch -> growth`` channels.

    Returns ``Concat(H_1, ..., H_K)`` of shape (B, K * growth, H, W), K = len(kernel_sizes).
    """

    def __init__(self, in_ch, growth, kernel_sizes):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(in_ch, growth, k, padding=k // 2) for k in kernel_sizes)
        self.act = nn.ReLU(inplace=True)

    def branches(self, x):
        """[H_1, ..., H_K], each (B, growth, H, W); a merged group returns one (B, K * growth, H, W) tensor."""
        return [self.act(conv(x)) for conv in self.convs]

    def forward(self, x):
        return torch.cat(self.branches(x), dim=1)

    def merge(self):
        """In place: one convolution with the kernels zero-padded to the largest (exact; see the module docstring)."""
        if len(self.convs) > 1:
            self.convs = nn.ModuleList([merged_conv(list(self.convs))])


class MSRDB(nn.Module):
    """Multi-scale residual dense block (section 2.2, Fig. 3).

    connection='dense' (the paper): ``G_1 = x``, ``G_{i+1} = Concat(H_{i,1..K}, G_i)`` (eq. 6), so the channels grow
    by ``K * growth`` per group. connection='residual' (Table 1, row 1): ``G_{i+1} = Concat(H_{i,1..K})`` without the
    dense pass-through. Either way the last ``G`` is fused by a 3x3 convolution to ``num_feat`` channels and added to
    ``x``. (B, num_feat, H, W) -> (B, num_feat, H, W).
    """

    def __init__(self, num_feat=64, growth=16, num_groups=7, kernel_sizes=(3, 5, 7), connection='dense'):
        super().__init__()
        if connection not in CONNECTIONS:
            raise ValueError(f'connection must be one of {CONNECTIONS}, got {connection!r}')
        for k in kernel_sizes:
            if k % 2 != 1:
                raise ValueError(f'MSRDB kernel sizes must be odd, got {k}')
        self.dense = connection == 'dense'
        branch_ch = len(kernel_sizes) * growth
        groups, in_ch = [], num_feat
        for _ in range(num_groups):
            groups.append(MultiScaleConvGroup(in_ch, growth, kernel_sizes))
            in_ch = in_ch + branch_ch if self.dense else branch_ch
        self.groups = nn.ModuleList(groups)
        self.fusion = nn.Conv2d(in_ch, num_feat, 3, padding=1)
        default_init_weights(self.fusion, scale=0.1)  # start close to identity, as BasicSR's RRDB does
        # set by fold_residual: a state-dict entry then, so plain weights never load silently into the folded layout
        self.register_buffer('folded_residual', None)

    @property
    def residual_folded(self):
        return self.folded_residual is not None

    def forward(self, x, workspace=None):
        """``workspace`` (:class:`ConcatWorkspace`): where to concatenate, in inference; None: fresh tensors."""
        g = x
        for index, group in enumerate(self.groups):  # one concatenation per group: Concat(H_1, ..., H_K, G_i)
            parts = group.branches(g) + ([g] if self.dense else [])
            if len(parts) == 1:
                g = parts[0]
            else:
                g = torch.cat(parts, dim=1) if workspace is None else workspace.cat(index, parts)
        return self.fusion(g) if self.residual_folded else x + self.fusion(g)

    def fold_residual(self):
        """In place, dense blocks only: ``x + Conv(G)`` -> ``Conv'(G)``, G's last ``num_feat`` channels being x."""
        if not self.dense or self.residual_folded:
            return
        num_feat, centre = self.fusion.out_channels, self.fusion.kernel_size[0] // 2
        first_x = self.fusion.in_channels - num_feat
        with torch.no_grad():
            self.fusion.weight[:, first_x:, centre, centre] += torch.eye(num_feat).to(self.fusion.weight)
        self.folded_residual = torch.ones((), device=self.fusion.weight.device)


def matched_residual_growth(num_feat=64, growth=16, num_groups=7, kernel_sizes=(3, 5, 7)):
    """Growth of a 'residual' MSRDB whose parameter count is closest to the 'dense' MSRDB of these arguments.

    Table 1's "3x3, residual" row read literally is a chain of ``growth``-channel convolutions: 0.89 M parameters at
    the paper's size against 2.35 M for "3x3, residual dense", so the row confounds connection type with capacity.
    This width removes the confound (53 at the paper's size with kernel 3; 36 with 32 channels and 3 groups); used by
    ``options/ablation/table1_k3_residual_matched.yml`` and ``scripts/reproduce_paper.py``.
    """
    kernel_sizes = tuple(kernel_sizes)

    def residual_minus_dense(width):
        with torch.device('meta'):  # shapes only: no memory, no initialisation
            blocks = MSRDB(num_feat, width, num_groups, kernel_sizes, 'residual'), MSRDB(
                num_feat, growth, num_groups, kernel_sizes, 'dense')
        residual, dense = (sum(p.numel() for p in block.parameters()) for block in blocks)
        return residual - dense

    low, high = 1, 8 * num_feat  # the residual block's count grows with its width: bisect for the first not below
    while low < high:
        mid = (low + high) // 2
        low, high = (mid + 1, high) if residual_minus_dense(mid) < 0 else (low, mid)
    return min({max(low - 1, 1), low}, key=lambda width: abs(residual_minus_dense(width)))


class MRDAB(nn.Module):
    """Multi-scale residual dense attention block: MSRDB followed by DPAM (Fig. 2(a)); eq. (2)."""

    def __init__(self, num_feat, growth, num_groups, kernel_sizes, connection, attention, sam_kernel_sizes,
                 pcam_reduction):
        super().__init__()
        self.msrdb = MSRDB(num_feat, growth, num_groups, kernel_sizes, connection)
        self.dpam = DualParallelAttention(num_feat, attention, sam_kernel_sizes, pcam_reduction)

    def forward(self, x, workspace=None):
        return self.dpam(self.msrdb(x, workspace))


@ARCH_REGISTRY.register()
class MRDABNet(nn.Module):
    """Generator of the paper: shallow conv, N MRDABs, global concat fusion, sub-pixel upscale.

    (1) F_0 = ReLU(Conv3x3(I_LR));  (2) F_n = MRDAB(F_{n-1});  (3) F_s = Conv3x3(Concat(F_0, ..., F_N));
    (4) I_SR = Conv3x3(PixelShuffle-upsample(F_s)).

    Args:
        num_in_ch (int): Input channels: 1 for native MR, 3 for the paper's 3-channel input. Default: 3.
        num_out_ch (int): Output channels. Default: 3.
        num_feat (int): Feature channels (paper: 64). Default: 64.
        num_block (int): Number N of MRDABs (paper: 8). Default: 8.
        num_groups (int): MSCGs per MSRDB (not given in the paper; see the module docstring). Default: 7.
        growth (int): Output channels of each convolution in an MSCG (paper: 16). Default: 16.
        kernel_sizes (sequence[int]): MSCG kernels; Table 1 rows: [3], [3, 5], [1, 3, 5], [3, 5, 7]. Default: 3, 5, 7.
        connection (str): 'dense' (residual dense, the paper) or 'residual' (Table 1, row 1). Default: 'dense'.
        attention (str): 'none', 'sam', 'pcam' or 'dpam' (Table 2). Default: 'dpam'.
        sam_kernel_sizes (sequence[int]): SAM convolutions, eq. (9). Default: 3, 5, 7.
        pcam_reduction (int): PCAM hidden width is num_feat // pcam_reduction. Default: 16.
        upscale (int): 2, 3, 4 or 8; or 1 (not in the paper): no sub-pixel stage, the output has the input's size,
            for inputs that are already interpolated to the output grid (through-plane super-resolution,
            :mod:`mrsr_plugin.apps.through_plane`). Default: 4.
        global_skip (str): 'none' (the paper) or 'bicubic': add the bicubic interpolation of the input to the
            output, so the network learns the residual over interpolation, and start from it exactly (conv_last
            zero-initialised); at upscale 1 the input itself is added. Not in the paper; needs
            num_in_ch == num_out_ch. Default: 'none'.

    Shapes: (B, num_in_ch, H, W) -> (B, num_out_ch, upscale * H, upscale * W).
    """

    tail_band_rows = 64  # rows of F_s per band of the upsampling tail in inference (upsample_bands); 0: whole

    def __init__(self, num_in_ch=3, num_out_ch=3, num_feat=64, num_block=8, num_groups=7, growth=16,
                 kernel_sizes=(3, 5, 7), connection='dense', attention='dpam', sam_kernel_sizes=(3, 5, 7),
                 pcam_reduction=16, upscale=4, global_skip='none'):
        super().__init__()
        if upscale not in (1, 2, 3, 4, 8):
            raise ValueError(f'MRDABNet supports upscale 1, 2, 3, 4 and 8, got {upscale}')
        if global_skip not in GLOBAL_SKIPS:
            raise ValueError(f'global_skip must be one of {GLOBAL_SKIPS}, got {global_skip!r}')
        if global_skip != 'none' and num_in_ch != num_out_ch:
            raise ValueError(f'global_skip {global_skip!r} needs num_in_ch == num_out_ch, got {num_in_ch} and '
                             f'{num_out_ch}')
        self.upscale, self.global_skip = upscale, global_skip
        self.conv_first = nn.Sequential(nn.Conv2d(num_in_ch, num_feat, 3, padding=1), nn.ReLU(inplace=True))
        self.blocks = nn.ModuleList(
            MRDAB(num_feat, growth, num_groups, tuple(kernel_sizes), connection, attention, tuple(sam_kernel_sizes),
                  pcam_reduction) for _ in range(num_block))
        self.fusion = nn.Conv2d((num_block + 1) * num_feat, num_feat, 3, padding=1)
        self.upsample = Upsample(upscale, num_feat)  # empty at upscale 1
        icnr_init_subpixel_convs(self.upsample, num_feat)  # no checkerboard at the start (not in the paper)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, padding=1)
        if global_skip != 'none':  # start as bicubic interpolation exactly
            nn.init.zeros_(self.conv_last.weight)
            nn.init.zeros_(self.conv_last.bias)

    def reparameterized(self, mode='fold'):
        """An inference copy with the same outputs up to float rounding and fewer operations (module docstring).

        Args:
            mode (str): 'none' (a plain copy), 'fold' or 'merge'. Default: 'fold'.

        Returns:
            MRDABNet: A new network in eval mode; its state dict no longer loads into the plain layout.
        """
        if mode not in REPARAMETERIZATIONS:
            raise ValueError(f'reparameterize must be one of {REPARAMETERIZATIONS}, got {mode!r}')
        net = copy.deepcopy(self).eval()
        if mode == 'none':
            return net
        if len(net.upsample):  # conv_last before the last shuffle: no num_feat x (s H) x (s W) map at the end
            *stages, shuffle = net.upsample
            with torch.no_grad():
                net.upsample = nn.Sequential(*stages, conv_before_shuffle(net.conv_last, shuffle.upscale_factor),
                                             shuffle)
            net.conv_last = nn.Identity()
        for block in net.blocks:
            block.msrdb.fold_residual()
            if block.dpam.sam is not None:
                block.dpam.sam.fold()
            if mode == 'merge':
                for group in block.msrdb.groups:
                    group.merge()
        return net

    def upsample_bands(self, fused):
        """``conv_last(upsample(fused))`` in bands of :attr:`tail_band_rows` rows of ``fused``, each with a halo of as
        many rows as the tail's convolutions reach, so the s^2-larger feature maps exist for one band at a time
        (the peak memory of a forward at x4: 128 channels at twice the input size, 0.3 GB for a 384x384 slice
        whole). The tail is convolutions and pixel shuffles only, so every kept row sees exactly the input it sees
        whole: equal up to float rounding.

        Args:
            fused (Tensor): (B, num_feat, H, W), F_s of eq. (3).

        Returns:
            Tensor: (B, num_out_ch, s H, s W).
        """
        height, s = fused.shape[-2], self.upscale
        if s == 1 or self.tail_band_rows <= 0 or height <= self.tail_band_rows:
            return self.conv_last(self.upsample(fused))
        # a k x k convolution at any resolution of the tail reaches k // 2 of its rows: at most k // 2 rows of fused
        halo = sum(m.kernel_size[0] // 2 for tail in (self.upsample, self.conv_last) for m in tail.modules()
                   if isinstance(m, nn.Conv2d))
        out = None
        for top in range(0, height, self.tail_band_rows):
            bottom = min(top + self.tail_band_rows, height)
            low, high = max(top - halo, 0), min(bottom + halo, height)
            band = self.conv_last(self.upsample(fused[..., low:high, :]))
            if out is None:
                out = band.new_empty(*band.shape[:2], s * height, band.shape[-1]).contiguous(
                    memory_format=torch.channels_last if band.is_contiguous(memory_format=torch.channels_last) and
                    not band.is_contiguous() else torch.contiguous_format)
            out[..., s * top:s * bottom, :] = band[..., s * (top - low):s * (bottom - low), :]
        return out

    def forward(self, x):
        # without autograd the blocks share their concatenation buffers (ConcatWorkspace); torch.compile plans its own
        shared = not torch.is_grad_enabled() and not torch.compiler.is_compiling()
        workspace = ConcatWorkspace() if shared else None
        feats = [self.conv_first(x)]  # F_0, eq. (1)
        for block in self.blocks:
            feats.append(block(feats[-1], workspace))  # F_n, eq. (2)
        fused = self.fusion(torch.cat(feats, dim=1))  # F_s, eq. (3)
        # the LR-size features and buffers are dead: free them before the upsampler's s^2-larger maps exist
        del feats, workspace
        out = self.upsample_bands(fused) if shared else self.conv_last(self.upsample(fused))  # eq. (4)
        if self.global_skip == 'bicubic':
            out = out + (x if self.upscale == 1 else
                         F.interpolate(x, scale_factor=self.upscale, mode='bicubic', align_corners=False))
        return out
