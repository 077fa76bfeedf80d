"""Paired MR dataset that keeps 16-bit precision (registered as ``ProstateMRPairedDataset``), and the reader it shares
with the through-plane dataset (``MRSliceDataset``)."""
import os

import numpy as np
import torch
from basicsr.data.data_util import paired_paths_from_folder, paired_paths_from_lmdb, paths_from_folder, paths_from_lmdb
from basicsr.data.transforms import augment, mod_crop, paired_random_crop
from basicsr.utils import FileClient
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data as data

from .degradations import DegradationConfig, degrade, rng_for
from .mr_image import decode_to_float


class MRSliceDataset(data.Dataset):
    """What the plugin's MR datasets share: BasicSR's FileClient, 16-bit-exact reading, channel count, training RNG.

    Options (``opt``): ``io_backend`` and ``num_channels`` (1 or 3) as in :class:`ProstateMRPairedDataset`.
    """

    def __init__(self, opt):
        super().__init__()
        self.opt = opt
        self.io_backend_opt = dict(opt['io_backend'])
        self.file_client = None
        self.num_channels = opt.get('num_channels', 1)
        if self.num_channels not in (1, 3):
            raise ValueError(f'num_channels must be 1 or 3, got {self.num_channels}')
        self.draws = 0  # training draws made by this copy of the dataset (each DataLoader worker has its own)

    def check_roots(self, *roots):
        """FileNotFoundError naming the dataset for a given root that does not exist."""
        for root in roots:
            if root and not os.path.exists(root):
                raise FileNotFoundError(f'dataset {self.opt.get("name")}: {root} does not exist')

    def hr_paths(self, gt_root):
        """``[{'gt_path': key, 'lq_path': key}]`` of an HR LMDB or folder alone; points the LMDB client at it."""
        if self.io_backend_opt['type'] == 'lmdb':
            self.io_backend_opt.update(db_paths=[gt_root], client_keys=['gt'])
            return [{'gt_path': key, 'lq_path': key} for key in paths_from_lmdb(gt_root)]
        return [{'gt_path': p, 'lq_path': p} for p in sorted(paths_from_folder(gt_root))]

    def _read(self, path, client_key):
        if self.file_client is None:
            backend = dict(self.io_backend_opt)
            self.file_client = FileClient(backend.pop('type'), **backend)
        img = decode_to_float(self.file_client.get(path, client_key), source=path)
        return img.mean(axis=2, keepdims=True) if img.shape[2] != 1 else img

    def training_rng(self, index):
        """Generator of the degradation of one training sample: a new stream in every call, epoch and worker, the
        same streams again for the same torch seed.

        Its entropy is ``torch.initial_seed()`` (in a DataLoader worker the loader's base seed, which torch draws
        from its main generator for every epoch, plus the worker id; in the main process the seed of
        ``torch.manual_seed``, which BasicSR sets from ``manual_seed``), the number of draws this copy of the
        dataset made before, and ``index``. numpy's global state is not used: BasicSR's ``worker_init_fn`` reseeds
        it identically for every epoch's new workers.
        """
        self.draws += 1
        return np.random.default_rng([torch.initial_seed(), self.draws, index])

    def to_item(self, img_gt, img_lq, paths):
        """(h, w, 1) float arrays -> the item dict of (C, h, w) float32 tensors, repeated to num_channels."""
        img_gt, img_lq = (torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))) for img in (img_gt, img_lq))
        if self.num_channels == 3:
            img_gt, img_lq = img_gt.expand(3, -1, -1).contiguous(), img_lq.expand(3, -1, -1).contiguous()
        return {'lq': img_lq, 'gt': img_gt, 'lq_path': paths['lq_path'], 'gt_path': paths['gt_path']}

    def __len__(self):
        return len(self.paths)


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
