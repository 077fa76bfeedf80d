"""Initialisation and EMA settings that make short runs meaningful, for the plugin's SRModel subclasses."""
from mrsr_plugin.archs.arch_util import icnr_init_subpixel_convs


class TrainingMixin:
    """``train.icnr_init`` and ``train.ema_warmup`` (both default true) for an SRModel subclass; first in the bases.

    - ``icnr_init``: every network the model builds for training has its sub-pixel convolutions ICNR-initialised
      (:func:`mrsr_plugin.archs.arch_util.icnr_init_subpixel_convs`) before it goes to the device, is compiled or
      loads ``pretrain_network_g``; so BasicSR's EDSR and MSRResNet start without a checkerboard, as MRDABNet does.
    - ``ema_warmup``: BasicSR's EMA uses ``ema_decay`` from the first iteration, so after n << 1 / (1 - decay)
      iterations ``net_g_ema`` is still mostly its initialisation (0.999 ** 800 = 45% of it). With the warm-up the
      decay of the update after iteration t is ``min(ema_decay, (1 + t) / (10 + t))`` (timm, TensorFlow's
      ExponentialMovingAverage ``num_updates``), ``ema_decay`` itself from t = 8991 on for 0.999. t counts the
      iterations before this one (``current_iter - 1``), which BasicSR's training state holds, so a resumed run
      continues the same schedule.
    """

    def model_to_device(self, net):
        if self.is_train and self.opt['train'].get('icnr_init', True):
            icnr_init_subpixel_convs(net)
        return super().model_to_device(net)

    def ema_decay_at(self, current_iter):
        """The EMA decay of the update after iteration ``current_iter`` (1-based, as BasicSR counts)."""
        if not self.opt['train'].get('ema_warmup', True):
            return self.ema_decay
        steps = current_iter - 1
        return min(self.ema_decay, (1 + steps) / (10 + steps))
