"""Generator checkpoints of the plugin's models: ``path.pretrain_network_g`` by name (:mod:`mrsr_plugin.weights`),
and saves that describe themselves (:mod:`mrsr_plugin.checkpoint`)."""
import os
import sys

from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import get_dist_info
from basicsr.utils.registry import DATASET_REGISTRY

from mrsr_plugin import checkpoint
from mrsr_plugin.data.slice_profile import ThroughPlaneConfig
from mrsr_plugin.weights import resolve

THROUGH_PLANE_DATASET = 'ProstateMRThroughPlaneDataset'  # looked up in the registry: data imports the models


class CheckpointMixin:
    """Put it before BasicSR's model class in the bases.

    - ``path.pretrain_network_g`` is resolved before BasicSR's model loads it: a file as it is, a name of the
      weights manifest to its checked local file (downloaded once).
    - ``save_network`` of ``net_g`` (``net_g_<iter>.pth``, ``params`` and ``params_ema``) writes the checkpoint
      with its ``mrsr`` block (:func:`mrsr_plugin.checkpoint.training_info`) through
      :func:`mrsr_plugin.checkpoint.save`, atomically, on rank 0 only (every rank holds the same weights); as in
      BasicSR, a failed save is logged and training goes on. Other networks (``net_d``) are saved by BasicSR.
    """

    def __init__(self, opt):
        pretrained = opt['path'].get('pretrain_network_g')
        if pretrained is not None:
            opt['path']['pretrain_network_g'] = resolve(pretrained)[0]
        super().__init__(opt)

    def save_network(self, net, net_label, current_iter, param_key='params'):
        if net_label != 'net_g':
            return super().save_network(net, net_label, current_iter, param_key)
        if get_dist_info()[0] != 0:
            return
        nets = [self.get_bare_model(n) for n in (net if isinstance(net, list) else [net])]
        keys = param_key if isinstance(param_key, list) else [param_key]
        # BasicSR saves 'latest' (-1) once, after the last iteration
        iteration = int(self.opt['train']['total_iter']) if current_iter == -1 else current_iter
        name = f'{net_label}_{"latest" if current_iter == -1 else current_iter}.pth'
        path = os.path.join(self.opt['path']['models'], name)
        info = checkpoint.training_info(self.opt, nets[0], iteration, _option_file(), self._slice_profile())
        try:
            checkpoint.save(path, {key: n.state_dict() for n, key in zip(nets, keys, strict=True)}, info)
        except (OSError, RuntimeError) as err:
            get_root_logger().warning(f'Cannot save {path}: {err}')

    def _slice_profile(self):
        """The :class:`ThroughPlaneConfig` of a through-plane training set, else None."""
        train = (self.opt.get('datasets') or {}).get('train') or {}
        if train.get('type') not in DATASET_REGISTRY or not issubclass(DATASET_REGISTRY.get(train['type']),
                                                                        DATASET_REGISTRY.get(THROUGH_PLANE_DATASET)):
            return None
        return ThroughPlaneConfig.from_dict(train['degradation'])


def _option_file():
    """The ``-opt`` argument that BasicSR's ``parse_options`` read (for a composed file, its plain rendering under the
    same name), or None."""
    from mrsr_plugin.options import option_argument  # options imports basicsr, which imports the models
    return option_argument(sys.argv)
