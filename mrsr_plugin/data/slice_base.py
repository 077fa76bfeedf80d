"""What the plugin's MR datasets share (:class:`MRSliceDataset`), in a module that imports no BasicSR on load.

The datasets (``*_dataset.py``) are imported by :func:`mrsr_plugin.registration.register` when basicsr is imported,
possibly from inside the import of one of them (the one whose ``import basicsr`` ran the registration): the others
then import this base, complete, instead of that half-loaded module.
"""
import os

import numpy as np
import torch
from torch.utils import data as data

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
        from basicsr.data.data_util import paths_from_folder, paths_from_lmdb
        if self.io_backend_opt['type'] == 'lmdb':
            self.io_backend_opt.update(db_paths=[gt_root], client_keys=['gt'])
            return [{'gt_path': key, 'lq_path': key} for key in paths_from_lmdb(gt_root)]
        return [{'gt_path': p, 'lq_path': p} for p in sorted(paths_from_folder(gt_root))]

    def _read(self, path, client_key):
        if self.file_client is None:
            from basicsr.utils import FileClient
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
