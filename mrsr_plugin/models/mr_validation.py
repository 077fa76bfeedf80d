"""Validation that measures and saves MR outputs without BasicSR's 8-bit rounding."""
import os
from os import path as osp

import torch
from basicsr.metrics import calculate_metric
from basicsr.utils import tensor2img
from basicsr.utils.registry import METRIC_REGISTRY
from tqdm import tqdm

from mrsr_plugin.data.mr_image import encode_png, quantize


def _float_image(tensor):
    """(1, C, H, W) tensor -> float32 (H, W, C) ndarray clipped to [0, 1], not rounded."""
    return tensor[0].float().clamp(0, 1).numpy().transpose(1, 2, 0)


class MRValidationMixin:
    """``nondist_validation`` of BasicSR's SRModel for MR, to put before an SRModel subclass in the bases.

    Metrics of ``val.metrics`` whose registered function has ``float_input`` (the plugin's ``calculate_mr_psnr``,
    ``calculate_mr_ssim``) receive the SR and GT images as float32 (H, W, C) in [0, 1]; the others (BasicSR's
    ``calculate_psnr``, ``calculate_ssim``, ...) receive BasicSR's 8-bit ``tensor2img`` images as before, so both
    kinds can sit in one validation block. With ``save_img`` the SR image goes to BasicSR's paths as a grey PNG (the
    channel mean) of ``val.save_bit_depth`` bits (8 or 16, default 16).
    """

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        dataset_name = dataloader.dataset.opt['name']
        with_metrics = self.opt['val'].get('metrics') is not None
        use_pbar = self.opt['val'].get('pbar', False)

        if with_metrics:
            if not hasattr(self, 'metric_results'):  # only execute in the first run
                self.metric_results = {metric: 0 for metric in self.opt['val']['metrics'].keys()}
            # initialize the best metric results for each dataset_name (supporting multiple validation datasets)
            self._initialize_best_metric_results(dataset_name)
            float_input = {
                name: getattr(METRIC_REGISTRY.get(opt_['type']), 'float_input', False)
                for name, opt_ in self.opt['val']['metrics'].items()
            }
        # zero self.metric_results
        if with_metrics:
            self.metric_results = {metric: 0 for metric in self.metric_results}

        float_data, uint8_data = dict(), dict()
        if use_pbar:
            pbar = tqdm(total=len(dataloader), unit='image')

        for idx, val_data in enumerate(dataloader):
            img_name = osp.splitext(osp.basename(val_data['lq_path'][0]))[0]
            self.feed_data(val_data)
            self.test()

            visuals = self.get_current_visuals()
            float_data['img'] = _float_image(visuals['result'])
            uint8_data['img'] = tensor2img([visuals['result']])
            if 'gt' in visuals:
                float_data['img2'] = _float_image(visuals['gt'])
                uint8_data['img2'] = tensor2img([visuals['gt']])
                del self.gt

            # tentative for out of GPU memory
            del self.lq
            del self.output
            torch.cuda.empty_cache()

            if save_img:
                if self.opt['is_train']:
                    save_img_path = osp.join(self.opt['path']['visualization'], img_name,
                                             f'{img_name}_{current_iter}.png')
                else:
                    if self.opt['val'].get('suffix'):
                        save_img_path = osp.join(self.opt['path']['visualization'], dataset_name,
                                                 f'{img_name}_{self.opt["val"]["suffix"]}.png')
                    else:
                        save_img_path = osp.join(self.opt['path']['visualization'], dataset_name,
                                                 f'{img_name}_{self.opt["name"]}.png')
                grey = quantize(float_data['img'].mean(axis=2), self.opt['val'].get('save_bit_depth', 16))
                os.makedirs(osp.dirname(osp.abspath(save_img_path)), exist_ok=True)
                with open(save_img_path, 'wb') as f:
                    f.write(encode_png(grey))

            if with_metrics:
                # calculate metrics
                for name, opt_ in self.opt['val']['metrics'].items():
                    data = float_data if float_input[name] else uint8_data
                    self.metric_results[name] += calculate_metric(data, opt_)
            if use_pbar:
                pbar.update(1)
                pbar.set_description(f'Test {img_name}')
        if use_pbar:
            pbar.close()

        if with_metrics:
            for metric in self.metric_results.keys():
                self.metric_results[metric] /= (idx + 1)
                # update the best metric result
                self._update_best_metric_result(dataset_name, metric, self.metric_results[metric], current_iter)

            self._log_validation_metric_values(current_iter, dataset_name, tb_logger)
