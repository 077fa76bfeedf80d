"""``path.pretrain_network_g`` by name (:mod:`mrsr_plugin.weights`) for the plugin's models."""
from mrsr_plugin.weights import resolve


class NamedWeightsMixin:
    """Resolves ``path.pretrain_network_g`` before BasicSR's model loads it: a file as it is, a name of the
    weights manifest to its checked local file (downloaded once); put it before BasicSR's model class in the
    bases."""

    def __init__(self, opt):
        pretrained = opt['path'].get('pretrain_network_g')
        if pretrained is not None:
            opt['path']['pretrain_network_g'] = resolve(pretrained)[0]
        super().__init__(opt)
