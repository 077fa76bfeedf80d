"""Discriminator of the paper (section 2.1, Fig. 2(b)): conv blocks of convolution + BN or IN + LeakyReLU."""
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn as nn

NORM_TYPES = ('bn', 'in', 'none')
HEADS = ('gap', 'dense')
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
    """Conv blocks with BatchNorm / InstanceNorm, then a two-layer head: one logit per image.

    Block ``i`` is Conv3x3(stride 1 if i is even else 2) -> norm ``norms[i]`` -> LeakyReLU(0.2); widths start at
    ``num_feat`` and double after every stride-2 block, capped at ``8 * num_feat``. Inputs must be at least
    ``2 ** (number of stride-2 blocks + 1)`` pixels so that InstanceNorm sees more than one pixel.

    The paper shows the blocks and says the probability of being real comes out "at last", not how. Two heads:

    - ``gap`` (not SRGAN's): global average pooling, then 1x1 convolutions to ``head_feat`` channels and to 1. Any
      input size works (BasicSR's VGGStyleDiscriminator accepts only 128 or 256).
    - ``dense`` (SRGAN's, ref. [5]): flatten the last feature map, then Dense(``head_feat``) -> LeakyReLU -> Dense(1).
      Its size follows from the input size, so ``input_size`` is required and other sizes are refused.

    The output is one logit per image (no sigmoid): BasicSR's GANLoss applies it ('vanilla' uses BCEWithLogits), and
    ``sigmoid(logit)`` is the probability of the input being real that the paper describes.

    Args:
        num_in_ch (int): Image channels, 1 or 3. Default: 3.
        num_feat (int): Width of the first block. Default: 64.
        norms (sequence[str]): One of 'bn', 'in', 'none' per block; its length is the number of blocks.
            Default: none, in, bn, in, bn, in, bn, in.
        head_feat (int): Width of the head's hidden layer (SRGAN: 1024). Default: 1024.
        head (str): 'gap' or 'dense' (see above). Default: 'gap'.
        input_size (int | sequence[int] | None): Input height and width (one int: square), the HR crop
            ``gt_size``; required by 'dense'; with 'gap' inputs are checked against it if set. Default: None.

    Shapes: (B, num_in_ch, H, W) -> (B, 1).
    """

    def __init__(self, num_in_ch=3, num_feat=64, norms=DEFAULT_NORMS, head_feat=1024, head='gap', input_size=None):
        super().__init__()
        norms = tuple(norms)
        bad = [n for n in norms if n not in NORM_TYPES]
        if bad or not norms:
            raise ValueError(f'norms must be a non-empty list of {NORM_TYPES}, got {list(norms)}')
        if head not in HEADS:
            raise ValueError(f'head must be one of {HEADS}, got {head!r}')
        if head == 'dense' and input_size is None:
            raise ValueError("head 'dense' needs input_size: the HR crop (datasets.train.gt_size)")
        self.input_size = None if input_size is None else _pair(input_size)
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
        if self.input_size is not None and min(self.input_size) < self.min_size:
            raise ValueError(f'input_size {list(self.input_size)} is under the {self.min_size}x{self.min_size} pixels '
                             f'that {self.num_downsample} stride-2 blocks need')
        self.features = nn.Sequential(*layers)
        if head == 'gap':
            self.head = nn.Sequential(
                nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_ch, head_feat, 1), nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(head_feat, 1, 1), nn.Flatten())
        else:
            h, w = self.input_size
            for _ in range(self.num_downsample):  # a 3x3 convolution of stride 2 and padding 1: ceil(n / 2)
                h, w = (h + 1) // 2, (w + 1) // 2
            self.head = nn.Sequential(
                nn.Flatten(), nn.Linear(in_ch * h * w, head_feat), nn.LeakyReLU(0.2, inplace=True),
                nn.Linear(head_feat, 1))

    @property
    def min_size(self):
        """Smallest input side: InstanceNorm needs more than one pixel after the last stride-2 block."""
        return 2**(self.num_downsample + 1)

    def forward(self, x):
        size = tuple(x.shape[-2:])
        if self.input_size is not None and size != self.input_size:
            raise ValueError(f'BNINDiscriminator was built for {self.input_size[0]}x{self.input_size[1]} inputs '
                             f'(input_size), got {size}')
        if min(size) < self.min_size:
            raise ValueError(f'BNINDiscriminator with {self.num_downsample} stride-2 blocks needs inputs of at '
                             f'least {self.min_size}x{self.min_size} pixels, got {size}')
        return self.head(self.features(x))


def _pair(size):
    """``input_size`` as (height, width)."""
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or not all(isinstance(n, int) and n > 0 for n in pair):
        raise ValueError(f'input_size must be a positive int or [height, width], got {size!r}')
    return pair
