"""BasicSR's SRModel with MR validation and the plugin's fast paths (registered as ``MRSRModel``)."""
from collections import OrderedDict

from basicsr.models.sr_model import SRModel
from basicsr.utils.registry import MODEL_REGISTRY

from .checkpoint_mixin import CheckpointMixin
from .fast_path import FastPathMixin
from .mr_validation import MRValidationMixin
from .training_mixin import TrainingMixin


@MODEL_REGISTRY.register()
class MRSRModel(TrainingMixin, CheckpointMixin, FastPathMixin, MRValidationMixin, SRModel):
    """SRModel whose validation measures and saves float MR images (see :class:`MRValidationMixin`) and which runs
    the ``speed`` options (see :class:`FastPathMixin`), with ICNR initialisation and EMA warm-up (see
    :class:`TrainingMixin`); ``path.pretrain_network_g`` may name manifest weights and
    saved generators describe themselves (:class:`CheckpointMixin`)."""

    def optimize_parameters(self, current_iter):
        """SRModel.optimize_parameters with net_g under autocast, fp32 losses and backward through the GradScaler
        (a no-op without fp16). Without AMP the arithmetic is BasicSR's, step for step (tests/test_fast_paths.py)."""
        self.optimizer_g.zero_grad()
        self.output = self.forward_amp(self.net_g, self.lq)

        loss_dict = OrderedDict()
        l_total = self.add_content_losses(0, loss_dict, 'l_')  # pixel and perceptual losses

        self.grad_scaler.scale(l_total).backward()
        self.grad_scaler.step(self.optimizer_g)
        self.grad_scaler.update()

        self.log_dict = self.reduce_loss_dict(loss_dict)

        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay_at(current_iter))
