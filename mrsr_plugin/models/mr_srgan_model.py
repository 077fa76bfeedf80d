"""BasicSR's SRGANModel with MR validation and the plugin's fast paths (registered as ``MRSRGANModel``)."""
from collections import OrderedDict

import torch
from basicsr.models.srgan_model import SRGANModel
from basicsr.utils.registry import MODEL_REGISTRY

from .checkpoint_mixin import CheckpointMixin
from .fast_path import FastPathMixin
from .mr_validation import MRValidationMixin
from .training_mixin import TrainingMixin


@MODEL_REGISTRY.register()
class MRSRGANModel(TrainingMixin, CheckpointMixin, FastPathMixin, MRValidationMixin, SRGANModel):
    """SRGANModel whose validation measures and saves float MR images (see :class:`MRValidationMixin`) and which
    runs the ``speed`` options (see :class:`FastPathMixin`), with ICNR initialisation and EMA warm-up
    (see :class:`TrainingMixin`); ``path.pretrain_network_g`` may name manifest weights and
    saved generators describe themselves (:class:`CheckpointMixin`)."""

    def optimize_parameters(self, current_iter):
        """SRGANModel.optimize_parameters with both networks under autocast, fp32 losses and backward through the
        GradScaler (a no-op without fp16), which is updated once per iteration after both steps. Without AMP the
        arithmetic is BasicSR's, step for step (tests/test_fast_paths.py)."""
        scaler = self.grad_scaler
        # optimize net_g
        for p in self.net_d.parameters():
            p.requires_grad = False

        self.optimizer_g.zero_grad()
        self.output = self.forward_amp(self.net_g, self.lq)

        loss_dict = OrderedDict()
        if (current_iter % self.net_d_iters == 0 and current_iter > self.net_d_init_iters):
            l_g_total = self.add_content_losses(0, loss_dict, 'l_g_')  # pixel and perceptual losses
            # gan loss
            fake_g_pred = self.forward_amp(self.net_d, self.output)
            l_g_gan = self.cri_gan(fake_g_pred, True, is_disc=False)
            l_g_total += l_g_gan
            loss_dict['l_g_gan'] = l_g_gan

            scaler.scale(l_g_total).backward()
            scaler.step(self.optimizer_g)

        # optimize net_d
        for p in self.net_d.parameters():
            p.requires_grad = True

        self.optimizer_d.zero_grad()
        # real
        real_d_pred = self.forward_amp(self.net_d, self.gt)
        l_d_real = self.cri_gan(real_d_pred, True, is_disc=True)
        loss_dict['l_d_real'] = l_d_real
        loss_dict['out_d_real'] = torch.mean(real_d_pred.detach())
        scaler.scale(l_d_real).backward()
        # fake
        fake_d_pred = self.forward_amp(self.net_d, self.output.detach())
        l_d_fake = self.cri_gan(fake_d_pred, False, is_disc=True)
        loss_dict['l_d_fake'] = l_d_fake
        loss_dict['out_d_fake'] = torch.mean(fake_d_pred.detach())
        scaler.scale(l_d_fake).backward()
        scaler.step(self.optimizer_d)
        scaler.update()

        self.log_dict = self.reduce_loss_dict(loss_dict)

        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay_at(current_iter))
