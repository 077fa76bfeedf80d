"""Paired MR dataset that keeps 16-bit precision (registered as ``ProstateMRPairedDataset``)."""
import os

from basicsr.data.data_util import paired_paths_from_folder, paired_paths_from_lmdb
from basicsr.data.transforms import augment, mod_crop, paired_random_crop
from basicsr.utils.registry import DATASET_REGISTRY

from .degradations import DegradationConfig, degrade, rng_for
from .slice_base import MRSliceDataset


@DATASET_REGISTRY.register()
class ProstateMRPairedDataset(MRSliceDataset):
    """HR/LR pairs of single-channel MR slices from PNG folders or LMDBs written by ``scripts/lmdb_prepare.py``.

    8- and 16-bit images become float32 in [0, 1] divided by their own peak (255 or 65535), with no 8-bit rounding
    (BasicSR's ``imfrombytes`` decodes as 8-bit colour). Files are read through BasicSR's FileClient, paired by
    BasicSR's ``paired_paths_from_folder`` / ``paired_paths_from_lmdb``, cropped and augmented with
    ``basicsr.data.transforms``, so EnlargedSampler, workers and both prefetch modes work as for BasicSR's datasets.

    Options (``opt``):
        dataroot_gt (str): HR folder or ``.lmdb``.
        dataroot_lq (str | None): LR folder or ``.lmdb``; leave out and set ``degradation`` to make LR from HR.
        io_backend (dict): ``{type: disk}`` or ``{type: lmdb}``.
        filename_tmpl (str): LR name template of folder mode. Default: '{}'.
        num_channels (int): 1 (native MR) or 3 (the paper's input: the slice repeated). Default: 1.
        degradation (dict | None): :class:`DegradationConfig` keys; LR is then made from each whole HR slice
            (mod-cropped to the scale; the training crop is cut from HR and LR after, so k-space truncation and
            motion see the slice's borders, not the crop's), with a fresh random draw per training sample (see
            :meth:`training_rng`), or deterministically from ``degradation_seed`` and the image key in validation
            and testing.
        degradation_seed (int): Seed of the deterministic validation/test degradation. Default: 0.
        gt_size, use_hflip, use_rot: training crop and augmentation, as in BasicSR's PairedImageDataset.
        scale, phase: filled in by BasicSR from the option file.

    Items: ``{'lq': (C, h, w), 'gt': (C, h*scale, w*scale), 'lq_path': str, 'gt_path': str}`` float32 tensors.
    """

    def __init__(self, opt):
        super().__init__(opt)
        if opt['phase'] == 'train' and opt['gt_size'] % opt['scale']:
            raise ValueError(f'dataset {opt.get("name")}: gt_size {opt["gt_size"]} is not divisible by scale '
                             f'{opt["scale"]}')
        self.degradation = DegradationConfig.from_dict(opt['degradation']) if opt.get('degradation') else None
        gt_root, lq_root = opt['dataroot_gt'], opt.get('dataroot_lq')
        if self.degradation is None and not lq_root:
            raise ValueError(f'dataset {opt.get("name")}: set dataroot_lq, or degradation to make LR from HR')
        self.check_roots(gt_root, lq_root)
        if self.degradation is not None:
            self.paths = self.hr_paths(gt_root)
        elif self.io_backend_opt['type'] == 'lmdb':
            self.io_backend_opt.update(db_paths=[lq_root, gt_root], client_keys=['lq', 'gt'])
            self.paths = paired_paths_from_lmdb([lq_root, gt_root], ['lq', 'gt'])
        else:
            self.paths = paired_paths_from_folder([lq_root, gt_root], ['lq', 'gt'], opt.get('filename_tmpl', '{}'))

    def __getitem__(self, index):
        scale = self.opt['scale']
        paths = self.paths[index]
        img_gt = self._read(paths['gt_path'], 'gt')
        if self.degradation is None:
            img_lq = self._read(paths['lq_path'], 'lq')
        else:
            img_gt = mod_crop(img_gt, scale)
            if self.opt['phase'] == 'train':
                rng = self.training_rng(index)
            else:
                rng = rng_for(self.opt.get('degradation_seed', 0), os.path.basename(str(paths['gt_path'])), scale)
            img_lq = degrade(img_gt[..., 0], scale, self.degradation, rng)[..., None]
        if self.opt['phase'] == 'train':
            img_gt, img_lq = paired_random_crop(img_gt, img_lq, self.opt['gt_size'], scale, paths['gt_path'])
            img_gt, img_lq = augment([img_gt, img_lq], self.opt['use_hflip'], self.opt['use_rot'])
        else:
            img_gt = img_gt[:img_lq.shape[0] * scale, :img_lq.shape[1] * scale]
        return self.to_item(img_gt, img_lq, paths)
