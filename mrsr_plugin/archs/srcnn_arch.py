"""SRCNN, a baseline of the paper's Tables 3 and 4.

DONG C, LOY C C, HE K, TANG X. Image super-resolution using deep convolutional networks. IEEE TPAMI, 2016, 38(2):
295-307 (the paper's reference [2]).

Parameters (weights + biases), 9-5-5, n_1 = 64, n_2 = 32:
- 1 channel (the SRCNN paper's Y channel): 9*9*64 + 64 + 5*5*64*32 + 32 + 5*5*32 + 1 = 57,281 (57,184 weights, the
  SRCNN paper's count); Table 4's 5.6e4 is 2.3% under it, so Table 4 counts a 1-channel SRCNN;
- 3 channels (the option files in options/zoo, the paper's 3-channel input): 9*9*3*64 + 64 + 51,232 + 5*5*32*3 + 3
  = 69,251.
"""
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn as nn
from torch.nn import functional as F


@ARCH_REGISTRY.register()
class SRCNN(nn.Module):
    """SRCNN (Dong et al. 2016, section 3.1, eqs. (1)-(3)) on LR inputs.

    The LR image is first upscaled by bicubic interpolation (``F.interpolate``, as SRCNN's pre-processing), then
    ``F_1 = ReLU(W_1 * Y + B_1)`` (f_1 x f_1, num_in_ch -> n_1), ``F_2 = ReLU(W_2 * F_1 + B_2)`` (f_2 x f_2,
    n_1 -> n_2), ``F = W_3 * F_2 + B_3`` (f_3 x f_3, n_2 -> num_out_ch). Zero 'same' padding keeps the size (SRCNN
    trains without padding on 33x33 crops), so it runs on the same LR->HR pairs as the other networks.
    Initialisation as in section 3.3: weights N(0, 0.001^2), biases 0.

    Args:
        num_in_ch (int): Input channels. Default: 3.
        num_out_ch (int): Output channels. Default: 3.
        kernel_sizes (sequence[int]): f_1, f_2, f_3; odd. 9-5-5 (default), 9-1-5 or 9-3-5 in the SRCNN paper.
            Default: 9, 5, 5.
        num_feats (sequence[int]): n_1, n_2. Default: 64, 32.
        upscale (int): Upsampling factor of the bicubic pre-upscaling. Default: 4.

    Shapes: (B, num_in_ch, H, W) -> (B, num_out_ch, upscale * H, upscale * W).
    """

    def __init__(self, num_in_ch=3, num_out_ch=3, kernel_sizes=(9, 5, 5), num_feats=(64, 32), upscale=4):
        super().__init__()
        if len(kernel_sizes) != 3 or len(num_feats) != 2:
            raise ValueError(f'SRCNN needs 3 kernel sizes and 2 widths, got {kernel_sizes} and {num_feats}')
        for k in kernel_sizes:
            if k % 2 != 1:
                raise ValueError(f'SRCNN kernel sizes must be odd for same padding, got {k}')
        self.upscale = upscale
        channels = (num_in_ch, *num_feats, num_out_ch)
        self.convs = nn.ModuleList(
            nn.Conv2d(channels[i], channels[i + 1], k, padding=k // 2) for i, k in enumerate(kernel_sizes))
        self.act = nn.ReLU(inplace=True)
        for conv in self.convs:
            nn.init.normal_(conv.weight, std=0.001)
            nn.init.zeros_(conv.bias)

    def forward(self, x):
        out = F.interpolate(x, scale_factor=self.upscale, mode='bicubic', align_corners=False)
        for conv in self.convs[:-1]:
            out = self.act(conv(out))
        return self.convs[-1](out)
