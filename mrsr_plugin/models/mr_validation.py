"""Validation that measures and saves MR outputs without BasicSR's 8-bit rounding."""
import os

import numpy as np
from basicsr.models import sr_model
from basicsr.utils.registry import METRIC_REGISTRY

from mrsr_plugin.data.mr_image import encode_png, quantize


class _Image(np.ndarray):
    """BasicSR's 8-bit ``tensor2img`` image that also carries, as ``float``, the float32 (H, W, C) image in [0, 1]
    it was rounded from."""


class MRValidationMixin:
    """``nondist_validation`` of BasicSR's SRModel for MR, to put before an SRModel subclass in the bases.

    Metrics of ``val.metrics`` whose registered function has ``float_input`` (the plugin's ``calculate_mr_psnr``,
    ``calculate_mr_ssim``) receive the SR and GT images as float32 (H, W, C) in [0, 1]; the others (BasicSR's
    ``calculate_psnr``, ``calculate_ssim``, ...) receive BasicSR's 8-bit ``tensor2img`` images as before, so both
    kinds can sit in one validation block. With ``save_img`` the SR image goes to BasicSR's paths as a grey PNG (the
    channel mean) of ``val.save_bit_depth`` bits (8 or 16, default 16).

    BasicSR's own loop runs; for its duration three functions it calls from ``basicsr.models.sr_model`` are
    wrapped: ``tensor2img`` keeps the float image beside the 8-bit one,
    ``calculate_metric`` hands it to float_input metrics and ``imwrite`` writes it. ``val.suffix`` defaults to None
    (BasicSR's test mode reads it without a default).
    """

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        used = []

        def tensor2img(tensors):
            img = originals['tensor2img'](tensors).view(_Image)
            img.float = tensors[0][0].float().clamp(0, 1).numpy().transpose(1, 2, 0)
            used.append(True)
            return img

        def calculate_metric(data, opt):
            float_input = getattr(METRIC_REGISTRY.get(opt['type']), 'float_input', False)
            return originals['calculate_metric']({k: v.float if float_input else np.asarray(v)
                                                  for k, v in data.items()}, opt)

        def imwrite(img, path):
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            with open(path, 'wb') as f:
                f.write(encode_png(quantize(img.float.mean(axis=2), self.opt['val'].get('save_bit_depth', 16))))

        wrappers = {'tensor2img': tensor2img, 'calculate_metric': calculate_metric, 'imwrite': imwrite}
        originals = {name: getattr(sr_model, name) for name in wrappers}
        self.opt['val'].setdefault('suffix', None)
        try:
            for name, function in wrappers.items():
                setattr(sr_model, name, function)
            super().nondist_validation(dataloader, current_iter, tb_logger, save_img)
        finally:
            for name, function in originals.items():
                setattr(sr_model, name, function)
        if len(dataloader) and not used:  # a BasicSR whose loop no longer calls them: fail, not measure in 8 bits
            raise RuntimeError('SRModel.nondist_validation no longer calls basicsr.models.sr_model.tensor2img; '
                               'update mrsr_plugin/models/mr_validation.py')
