"""Bicubic interpolation as a network: the Bicubic row of the paper's Tables 3 and 4 (no parameters, no training)."""
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn as nn
from torch.nn import functional as F


@ARCH_REGISTRY.register()
class Bicubic(nn.Module):
    """Parameter-free bicubic upsampling, ``F.interpolate(mode='bicubic', align_corners=False)``.

    PyTorch's bicubic kernel is Keys' cubic convolution with a = -0.75 (as OpenCV's INTER_CUBIC; MATLAB's imresize
    uses a = -0.5); align_corners=False maps pixel centres as imresize does.

    For testing only (``python mrsr_plugin/test.py -opt options/zoo/test_bicubic_x4.yml``): the module has no
    parameters, so BasicSR's SRModel can build and test it, but training fails when the model builds its Adam
    optimizer over ``net_g.parameters()`` (an empty list).

    Args:
        num_in_ch (int): Input (= output) channels; only checked against the input. Default: 3.
        upscale (int): Upsampling factor, any positive integer. Default: 4.
        clamp (bool): Clamp the output to [0, 1] (bicubic overshoots at edges). Default: True.

    Shapes: (B, num_in_ch, H, W) -> (B, num_in_ch, upscale * H, upscale * W).
    """

    def __init__(self, num_in_ch=3, upscale=4, clamp=True):
        super().__init__()
        if upscale < 1:
            raise ValueError(f'Bicubic upscale must be a positive integer, got {upscale}')
        self.num_in_ch = num_in_ch
        self.upscale = upscale
        self.clamp = clamp

    def forward(self, x):
        if x.size(1) != self.num_in_ch:
            raise ValueError(f'Bicubic expects {self.num_in_ch} input channels, got {x.size(1)}')
        out = F.interpolate(x, scale_factor=self.upscale, mode='bicubic', align_corners=False)
        return out.clamp(0, 1) if self.clamp else out
