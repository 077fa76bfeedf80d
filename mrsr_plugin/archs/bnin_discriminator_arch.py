"""Discriminator of the paper (section 2.1, Fig. 2(b)): conv blocks of convolution + BN or IN + LeakyReLU."""
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn as nn

NORM_TYPES = ('bn', 'in', 'none')
# SRGAN's layout (ref. [5]): eight 3x3 blocks, stride 1 then 2 at each width, no norm on the first block. The paper
# says its blocks use BN and IN but not which uses which; this default alternates them, IN on every stride-2 block.
DEFAULT_NORMS = ('none', 'in', 'bn', 'in', 'bn', 'in', 'bn', 'in')


def _norm(norm_type, num_ch):
    if norm_type == 'bn':
        return nn.BatchNorm2d(num_ch)
    if norm_type == 'in':
        return nn.InstanceNorm2d(num_ch, affine=True)
    return nn.Identity()


@ARCH_REGISTRY.register()
class BNINDiscriminator(nn.Module):
    """Conv blocks with BatchNorm / InstanceNorm, then global pooling and a two-layer 1x1 head.

    Block ``i`` is Conv3x3(stride 1 if i is even else 2) -> norm ``norms[i]`` -> LeakyReLU(0.2); widths start at
    ``num_feat`` and double after every stride-2 block, capped at ``8 * num_feat``. Global average pooling makes any
    input size work (BasicSR's VGGStyleDiscriminator accepts only 128 or 256); the input must be at least
    ``2 ** (number of stride-2 blocks + 1)`` pixels so that InstanceNorm sees more than one pixel.

    The output is one logit per image (no sigmoid): BasicSR's GANLoss applies it ('vanilla' uses BCEWithLogits), and
    ``sigmoid(logit)`` is the probability of the input being real that the paper describes.

    Args:
        num_in_ch (int): Image channels, 1 or 3. Default: 3.
        num_feat (int): Width of the first block. Default: 64.
        norms (sequence[str]): One of 'bn', 'in', 'none' per block; its length is the number of blocks.
            Default: none, in, bn, in, bn, in, bn, in.
        head_feat (int): Width of the hidden 1x1 layer of the head (SRGAN: 1024). Default: 1024.

    Shapes: (B, num_in_ch, H, W) -> (B, 1).
    """

    def __init__(self, num_in_ch=3, num_feat=64, norms=DEFAULT_NORMS, head_feat=1024):
        super().__init__()
        norms = tuple(norms)
        bad = [n for n in norms if n not in NORM_TYPES]
        if bad or not norms:
            raise ValueError(f'norms must be a non-empty list of {NORM_TYPES}, got {list(norms)}')
        layers, in_ch, out_ch = [], num_in_ch, num_feat
        for i, norm_type in enumerate(norms):
            stride = 1 if i % 2 == 0 else 2
            # a conv followed by a norm with its own shift needs no bias
            layers += [
                nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=norm_type == 'none'),
                _norm(norm_type, out_ch),
                nn.LeakyReLU(0.2, inplace=True)
            ]
            in_ch = out_ch
            if stride == 2:
                out_ch = min(out_ch * 2, num_feat * 8)
        self.num_downsample = len(norms) // 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_ch, head_feat, 1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(head_feat, 1, 1), nn.Flatten())

    def forward(self, x):
        min_size = 2**(self.num_downsample + 1)
        if min(x.shape[-2:]) < min_size:
            raise ValueError(f'BNINDiscriminator with {self.num_downsample} stride-2 blocks needs inputs of at '
                             f'least {min_size}x{min_size} pixels, got {tuple(x.shape[-2:])}')
        return self.head(self.features(x))
