"""Initialisation shared by the plugin's networks and, through the plugin's models, BasicSR's."""
import torch
from torch import nn as nn


@torch.no_grad()
def icnr_(conv, upscale):
    """In place: ``conv`` (feeding ``PixelShuffle(upscale)``) starts as its first sub-pixel kernel repeated.

    ICNR (Aitken et al. 2017, "Checkerboard artifact free sub-pixel convolution"): PixelShuffle builds output channel
    c from input channels ``c * r^2 ... c * r^2 + r^2 - 1``; when those share one kernel and bias, conv + shuffle is a
    convolution followed by nearest-neighbour upsampling, so training starts without the checkerboard that
    independently initialised sub-pixel kernels print. The first kernel of each group is kept, so the scale of the
    network's own initialisation is unchanged, and a second call changes nothing.
    """
    group = upscale ** 2
    if conv.out_channels % group:
        raise ValueError(f'{conv} has {conv.out_channels} output channels, not a multiple of {group}')
    weight = conv.weight.view(conv.out_channels // group, group, *conv.weight.shape[1:])
    weight.copy_(weight[:, :1].expand_as(weight).clone())
    if conv.bias is not None:
        bias = conv.bias.view(-1, group)
        bias.copy_(bias[:, :1].expand_as(bias).clone())


@torch.no_grad()
def icnr_init_subpixel_convs(net, num_in_ch=None, probe_size=16):
    """ICNR (:func:`icnr_`) for every Conv2d whose output goes straight into an ``nn.PixelShuffle`` in ``net``.

    Found by one probe forward of zeros (1, num_in_ch, probe_size, probe_size) with hooks, so it covers BasicSR's
    ``Upsample`` (EDSR, RCAN, MRDABNet), MSRResNet's ``upconv``/``pixel_shuffle`` pairs and any other wiring.

    Args:
        net (nn.Module): A generator; left in the train/eval mode it had.
        num_in_ch (int | None): Input channels of the probe; None: those of the first Conv2d.
        probe_size (int): Side of the probe. Default: 16.

    Returns:
        list[nn.Conv2d]: The convolutions that were initialised.
    """
    shuffles = [m for m in net.modules() if isinstance(m, nn.PixelShuffle)]
    if not shuffles:
        return []
    if num_in_ch is None:
        num_in_ch = next(m for m in net.modules() if isinstance(m, nn.Conv2d)).in_channels
    producers, pairs, handles = {}, [], []
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(
                lambda conv, inputs, output: producers.__setitem__(id(output), (conv, output))))
    for shuffle in shuffles:
        handles.append(shuffle.register_forward_pre_hook(
            lambda shuffle, inputs: pairs.append((producers.get(id(inputs[0]), (None,))[0], shuffle))))
    training = net.training
    param = next(net.parameters())
    try:
        net.eval()
        net(torch.zeros(1, num_in_ch, probe_size, probe_size, dtype=param.dtype, device=param.device))
    finally:
        net.train(training)
        for handle in handles:
            handle.remove()
    done = []
    for conv, shuffle in pairs:
        if conv is not None and conv not in done:
            icnr_(conv, shuffle.upscale_factor)
            done.append(conv)
    return done
