"""BasicSR's SRModel with MR validation and the plugin's fast paths (registered as ``MRSRModel``)."""
from collections import OrderedDict

from basicsr.models.sr_model import SRModel
from basicsr.utils.registry import MODEL_REGISTRY

from .fast_path import FastPathMixin
from .mr_validation import MRValidationMixin


@MODEL_REGISTRY.register()
class MRSRModel(FastPathMixin, MRValidationMixin, SRModel):
    """SRModel whose validation measures and saves float MR images (see :class:`MRValidationMixin`) and which runs
    the ``speed`` options (see :class:`FastPathMixin`)."""

    def optimize_parameters(self, current_iter):
        """SRModel.optimize_parameters with net_g under autocast, fp32 losses and backward through the GradScaler
        (a no-op without fp16). Without AMP the arithmetic is BasicSR's, step for step (tests/test_fast_paths.py)."""
        self.optimizer_g.zero_grad()
        with self.autocast():
            output = self.net_g(self.lq)
        self.output = output.float()

        l_total = 0
        loss_dict = OrderedDict()
        # pixel loss
        if self.cri_pix:
            l_pix = self.cri_pix(self.output, self.gt)
            l_total += l_pix
            loss_dict['l_pix'] = l_pix
        # perceptual loss
        if self.cri_perceptual:
            l_percep, l_style = self.cri_perceptual(self.output, self.gt)
            if l_percep is not None:
                l_total += l_percep
                loss_dict['l_percep'] = l_percep
            if l_style is not None:
                l_total += l_style
                loss_dict['l_style'] = l_style

        self.grad_scaler.scale(l_total).backward()
        self.grad_scaler.step(self.optimizer_g)
        self.grad_scaler.update()

        self.log_dict = self.reduce_loss_dict(loss_dict)

        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)
