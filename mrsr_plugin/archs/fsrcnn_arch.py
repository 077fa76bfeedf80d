"""FSRCNN, a baseline of the paper's Tables 3 and 4.

DONG C, LOY C C, TANG X. Accelerating the super-resolution convolutional neural network. ECCV 2016: 391-407.

Parameters of FSRCNN(d=56, s=12, m=4):
- weights only, 1 channel (the FSRCNN paper's count): 5*5*56 + 56*12 + 4*3*3*12*12 + 12*56 + 9*9*56 = 12,464;
  + 173 biases (56 + 12 + 4*12 + 56 + 1) + 172 channel-wise PReLU slopes (56 + 12 + 4*12 + 56) = 12,809 in all,
  8.5% under Table 4's 1.4e4, so Table 4 counts a 1-channel FSRCNN;
- 3 channels (the option files in options/zoo, the paper's 3-channel input): weights 12,464 + 2*5*5*56 + 2*9*9*56
  = 24,336, + 175 biases + 172 slopes = 24,683. None of these depends on the upscale factor.
"""
import math

from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn as nn

DECONV_KERNEL = 9


def _conv_prelu(in_ch, out_ch, kernel_size):
    """Conv(kernel_size, out_ch, in_ch) + channel-wise PReLU, He et al. initialisation for PReLU (a = 0.25)."""
    conv = nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2)
    prelu = nn.PReLU(out_ch, init=0.25)
    nn.init.kaiming_normal_(conv.weight, a=0.25, mode='fan_in', nonlinearity='leaky_relu')
    nn.init.zeros_(conv.bias)
    return nn.Sequential(conv, prelu)


@ARCH_REGISTRY.register()
class FSRCNN(nn.Module):
    """FSRCNN (Dong et al. 2016, section 3.2) on LR inputs, no pre-upscaling.

    Conv(5, d, num_in_ch) - PReLU (feature extraction), Conv(1, s, d) - PReLU (shrinking), m x [Conv(3, s, s) -
    PReLU] (mapping), Conv(1, d, s) - PReLU (expanding), DeConv(9, num_out_ch, d) with stride ``upscale``.
    The deconvolution uses padding ``p = ceil((9 - upscale) / 2)`` and output_padding ``2p - (9 - upscale)``: the
    output is exactly ``upscale`` times the input and each kernel is centred on its LR pixel's HR position within
    half a pixel (exactly for odd factors). Initialisation as in the FSRCNN paper: convolutions He et al. for PReLU,
    biases 0, deconvolution weights N(0, 0.001^2).

    Args:
        num_in_ch (int): Input channels. Default: 3.
        num_out_ch (int): Output channels. Default: 3.
        d (int): LR feature dimension. Default: 56.
        s (int): Shrunk dimension of the mapping. Default: 12.
        m (int): Number of 3x3 mapping layers. Default: 4.
        upscale (int): Deconvolution stride, 1 to 10. Default: 4.

    Shapes: (B, num_in_ch, H, W) -> (B, num_out_ch, upscale * H, upscale * W).
    """

    def __init__(self, num_in_ch=3, num_out_ch=3, d=56, s=12, m=4, upscale=4):
        super().__init__()
        if not 1 <= upscale <= DECONV_KERNEL + 1:
            raise ValueError(f'FSRCNN supports upscale 1 to {DECONV_KERNEL + 1}, got {upscale}')
        self.upscale = upscale
        self.body = nn.Sequential(
            _conv_prelu(num_in_ch, d, 5),
            _conv_prelu(d, s, 1),
            *(_conv_prelu(s, s, 3) for _ in range(m)),
            _conv_prelu(s, d, 1),
        )
        padding = math.ceil((DECONV_KERNEL - upscale) / 2)
        self.deconv = nn.ConvTranspose2d(d, num_out_ch, DECONV_KERNEL, stride=upscale, padding=padding,
                                         output_padding=2 * padding - (DECONV_KERNEL - upscale))
        nn.init.normal_(self.deconv.weight, std=0.001)
        nn.init.zeros_(self.deconv.bias)

    def forward(self, x):
        return self.deconv(self.body(x))
