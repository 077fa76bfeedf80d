"""Dual parallel attention module (DPAM) of the paper, section 2.3 and Figs. 4-6.

DPAM runs a spatial attention (SAM, eqs. 7-11) and a pyramid channel attention (PCAM, eqs. 12-14) in parallel on
the output ``F`` of a multi-scale residual dense block and returns ``F + k1 * F + k2 * F`` (Fig. 4).
"""
import torch
from torch import nn as nn
from torch.nn import functional as F

ATTENTION_TYPES = ('none', 'sam', 'pcam', 'dpam')


def pad_kernel(weight, size):
    """(O, I, k, k) -> (O, I, size, size), zero-padded around the centre; same output for padding ``size // 2``."""
    pad = (size - weight.shape[-1]) // 2
    return F.pad(weight, (pad, pad, pad, pad))


class SpatialAttention(nn.Module):
    """SAM, eqs. (7)-(11): a per-pixel weight map ``k1`` from channel-wise max and mean pooling.

    (7)  P1 = MaxPool_c(F), P2 = AvgPool_c(F)          pooling over the channel axis, each (B, 1, H, W)
    (8)  P = Concat(P1, P2)                             (B, 2, H, W)
    (9)  H_k = Conv_kxk(P) for k in kernel_sizes        (B, 1, H, W) each; paper: 3, 5, 7
    (10) H = H_1 + H_2 + H_3
    (11) k1 = sigmoid(H)                                (B, 1, H, W), broadcast over channels

    Args:
        kernel_sizes (sequence[int]): Odd kernel sizes of the parallel convolutions. Default: (3, 5, 7).
    """

    def __init__(self, kernel_sizes=(3, 5, 7)):
        super().__init__()
        for k in kernel_sizes:
            if k % 2 != 1:
                raise ValueError(f'SAM kernel sizes must be odd, got {k}')
        self.convs = nn.ModuleList(nn.Conv2d(2, 1, k, padding=k // 2) for k in kernel_sizes)

    def forward(self, x):
        """(B, C, H, W) -> weights k1 of shape (B, 1, H, W) in (0, 1)."""
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)  # eqs. (7)-(8)
        fused = sum(conv(pooled) for conv in self.convs)  # eqs. (9)-(10)
        return torch.sigmoid(fused)  # eq. (11)

    def fold(self):
        """In place: eq. (10)'s sum of the K convolutions as one, kernels zero-padded to the largest, biases summed."""
        if len(self.convs) < 2:
            return
        size = max(conv.kernel_size[0] for conv in self.convs)
        folded = nn.Conv2d(2, 1, size, padding=size // 2).to(self.convs[0].weight)
        with torch.no_grad():
            folded.weight.copy_(sum(pad_kernel(conv.weight, size) for conv in self.convs))
            folded.bias.copy_(sum(conv.bias for conv in self.convs))
        self.convs = nn.ModuleList([folded])


class PyramidChannelAttention(nn.Module):
    """PCAM, eqs. (12)-(14): a per-channel weight ``k2`` from a 1x1/2x2/4x4 average-pooling pyramid.

    (12) P_s = AvgPool_s(F) for s in pool_sizes         adaptive average pooling to (B, C, s, s); paper: 1, 2, 4
    (13) P' = Concat(flatten(P_1), flatten(P_2), flatten(P_4))      (B, 21 C)
    (14) k2 = FC(P') = sigmoid(W2 relu(W1 P'))          (B, C, 1, 1)

    The paper names two fully connected layers but not their width or activations. As in squeeze-and-excitation
    (which the paper says PCAM is based on), the hidden width is ``num_feat // reduction``, the first FC is followed
    by ReLU and the second by a sigmoid, so that ``k2`` is a weight in (0, 1) like SAM's ``k1``.

    Args:
        num_feat (int): Channels C of the input.
        reduction (int): Hidden width is ``max(1, num_feat // reduction)``. Default: 16.
        pool_sizes (sequence[int]): Output sizes of the pooling pyramid. Default: (1, 2, 4).
    """

    def __init__(self, num_feat, reduction=16, pool_sizes=(1, 2, 4)):
        super().__init__()
        self.pool_sizes = tuple(pool_sizes)
        hidden = max(1, num_feat // reduction)
        squeezed = num_feat * sum(s * s for s in self.pool_sizes)
        self.fc = nn.Sequential(
            nn.Linear(squeezed, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_feat), nn.Sigmoid())

    def forward(self, x):
        """(B, C, H, W) -> weights k2 of shape (B, C, 1, 1) in (0, 1)."""
        squeezed = torch.cat([F.adaptive_avg_pool2d(x, s).flatten(1) for s in self.pool_sizes], dim=1)  # (12)-(13)
        return self.fc(squeezed)[:, :, None, None]  # eq. (14)


class DualParallelAttention(nn.Module):
    """DPAM (Fig. 4): ``F_n = A1 + A2 + F_{n-1}`` with ``A1 = k1 * F_{n-1}`` (SAM) and ``A2 = k2 * F_{n-1}`` (PCAM).

    ``attention`` selects the rows of Table 2: 'none' returns the input unchanged, 'sam' and 'pcam' keep one
    branch (``F + A``), 'dpam' both.

    Args:
        num_feat (int): Channels of the input.
        attention (str): One of 'none', 'sam', 'pcam', 'dpam'. Default: 'dpam'.
        sam_kernel_sizes (sequence[int]): SAM's convolution kernels. Default: (3, 5, 7).
        pcam_reduction (int): PCAM's hidden-width divisor. Default: 16.
        pcam_pool_sizes (sequence[int]): PCAM's pyramid. Default: (1, 2, 4).
    """

    def __init__(self, num_feat, attention='dpam', sam_kernel_sizes=(3, 5, 7), pcam_reduction=16,
                 pcam_pool_sizes=(1, 2, 4)):
        super().__init__()
        if attention not in ATTENTION_TYPES:
            raise ValueError(f'attention must be one of {ATTENTION_TYPES}, got {attention!r}')
        self.sam = SpatialAttention(sam_kernel_sizes) if attention in ('sam', 'dpam') else None
        self.pcam = PyramidChannelAttention(num_feat, pcam_reduction, pcam_pool_sizes) if attention in (
            'pcam', 'dpam') else None

    def forward(self, x):
        """(B, C, H, W) -> (B, C, H, W): ``x * (1 + k1 + k2)``, one multiplication of the full feature map."""
        weights = [branch(x) for branch in (self.sam, self.pcam) if branch is not None]  # (B, 1, H, W), (B, C, 1, 1)
        return x * sum(weights, 1) if weights else x
