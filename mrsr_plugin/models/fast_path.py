"""The ``speed`` option block (:mod:`mrsr_plugin.speed`) in BasicSR's SRModel and SRGANModel."""
import torch

from mrsr_plugin.speed import SpeedOptions, evaluation_network


class FastPathMixin:
    """channels_last, AMP, torch.compile and re-parameterisation for an SRModel subclass; put it first in the bases.

    - ``model_to_device`` puts net_g and net_d in the memory format and compiles them for training;
    - ``feed_data`` gives the batches the memory format;
    - ``test`` runs an evaluation copy of net_g (or net_g_ema) from :func:`mrsr_plugin.speed.evaluation_network`
      under autocast, built at the start of each validation from the current weights and freed after it in training;
    - the models' ``optimize_parameters`` use :meth:`forward_amp`, :meth:`add_content_losses` and ``grad_scaler``;
    - on a CPU, ``keep_freed_memory`` applies :func:`mrsr_plugin.speed.keep_freed_memory` to the process.
    """

    def __init__(self, opt):
        self.speed = SpeedOptions.from_opt(opt.get('speed'))
        self.eval_net = None
        super().__init__(opt)
        self.grad_scaler = torch.amp.GradScaler(self.device.type, enabled=self.speed.amp == 'fp16')
        self.speed.configure_allocator(self.device)

    def autocast(self):
        return self.speed.autocast(self.device)

    def forward_amp(self, net, x):
        """``net(x)`` under autocast, returned as float32 for the losses."""
        with self.autocast():
            return net(x).float()

    def add_content_losses(self, l_total, loss_dict, prefix):
        """BasicSR's pixel and perceptual (+ style) losses of ``self.output`` against ``self.gt``, added to
        ``l_total`` in BasicSR's order and logged as ``{prefix}pix``, ``{prefix}percep``, ``{prefix}style``.

        Returns:
            The new total (``l_total`` unchanged where neither loss is configured).
        """
        if self.cri_pix:
            l_pix = self.cri_pix(self.output, self.gt)
            l_total += l_pix
            loss_dict[f'{prefix}pix'] = l_pix
        if self.cri_perceptual:
            l_percep, l_style = self.cri_perceptual(self.output, self.gt)
            if l_percep is not None:
                l_total += l_percep
                loss_dict[f'{prefix}percep'] = l_percep
            if l_style is not None:
                l_total += l_style
                loss_dict[f'{prefix}style'] = l_style
        return l_total

    def model_to_device(self, net):
        net = net.to(self.device, memory_format=self.speed.memory_format)
        if self.speed.compile and self.is_train:
            net.compile()  # in place: state_dict keys stay those of the bare network
        return super().model_to_device(net)

    def feed_data(self, data):
        super().feed_data(data)
        self.lq = self.lq.contiguous(memory_format=self.speed.memory_format)
        if hasattr(self, 'gt'):
            self.gt = self.gt.contiguous(memory_format=self.speed.memory_format)

    def test(self):
        """(B, C, h, w) ``self.lq`` -> float32 ``self.output`` through the evaluation network."""
        if self.eval_net is None:
            net = self.net_g_ema if hasattr(self, 'net_g_ema') else self.net_g
            self.eval_net = evaluation_network(self.get_bare_model(net), self.speed, self.device)
        with torch.no_grad(), self.autocast():
            output = self.eval_net(self.lq)
        self.output = output.float().contiguous()

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        """In training the evaluation network lives for one validation (the weights change in between); in test
        mode one serves every test set."""
        if self.is_train:
            self.eval_net = None
        try:
            super().nondist_validation(dataloader, current_iter, tb_logger, save_img)
        finally:
            if self.is_train:
                self.eval_net = None
