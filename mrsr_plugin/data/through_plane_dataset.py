"""Through-plane training pairs from in-plane HR slices (registered as ``ProstateMRThroughPlaneDataset``)."""
import os

import numpy as np
from basicsr.utils.registry import DATASET_REGISTRY

from .degradations import rng_for
from .slice_base import MRSliceDataset
from .slice_profile import ThroughPlaneConfig, hr_rows, interpolate_slices, output_length, profile_filter, shift_rows


@DATASET_REGISTRY.register()
class ProstateMRThroughPlaneDataset(MRSliceDataset):
    """Equal-size (interpolated thick-slice, HR) pairs from HR slices alone (:mod:`mrsr_plugin.data.slice_profile`).

    Each HR slice is turned so that the in-plane axis playing z is the rows (and, with ``inplane_spacing``, its
    rows averaged to target_spacing slabs); the slice profile is applied to the whole slice (in training, with
    ``slice_shift``, each row is then moved along the columns by its own random shift), the crop is cut, every
    s-th of its rows from its first is kept (the thick slices) and interpolated back along the rows (cubic, onto the
    kept-slice grid), and clipped to [0, 1] as :class:`mrsr_plugin.apps.infer.core.Upscaler` clips what the network
    sees.
    The crop's first and last rows are kept rows, so both ends are like the ends of a real stack. Crop position, axis
    and flips are drawn from :meth:`training_rng`; BasicSR's ``augment`` is not used because its 90-degree rotation
    would move z off the rows. Validation and testing use the whole slice, cut to s (m - 1) + 1 rows, and an axis
    drawn from ``degradation_seed`` and the image key.

    Options (``opt``):
        dataroot_gt (str): HR ``.lmdb`` (``scripts/lmdb_prepare.py``'s ``<split>/HR.lmdb``) or folder.
        io_backend (dict): ``{type: lmdb}`` or ``{type: disk}``.
        num_channels (int): 1 or 3 (the slice repeated). Default: 1.
        degradation (dict): :class:`mrsr_plugin.data.slice_profile.ThroughPlaneConfig` keys: slice_thickness,
            target_spacing, slice_gap, profile, axis, inplane_spacing, slice_shift (training pairs only).
        degradation_seed (int): Seed of the validation/test axis draw. Default: 0.
        gt_size (int | list[int]): Training crop, square or [rows, columns]; rows - 1 divisible by s.
        use_hflip (bool): Flip columns at random (training). Default: False.
        use_vflip (bool): Flip rows, i.e. reverse z, at random (training). Default: False.
        scale, phase: filled in by BasicSR; scale must be 1 (the network keeps the size).

    Items: ``{'lq': (C, h, w), 'gt': (C, h, w), 'lq_path': str, 'gt_path': str}`` float32 tensors, z along h.
    """

    def __init__(self, opt):
        super().__init__(opt)
        name = opt.get('name')
        if opt.get('scale', 1) != 1:
            raise ValueError(f'dataset {name}: through-plane pairs have equal sizes (the network upscales x1), set '
                             f'scale: 1, got {opt["scale"]}')
        try:
            self.config = ThroughPlaneConfig.from_dict(opt.get('degradation'))
        except ValueError as err:
            raise ValueError(f'dataset {name}: degradation: {err}') from err
        if opt['phase'] == 'train':
            size = opt['gt_size']
            self.crop = (size, size) if isinstance(size, int) else tuple(size)
            if len(self.crop) != 2 or (self.crop[0] - 1) % self.config.scale:
                raise ValueError(f'dataset {name}: gt_size must be an int or [rows, columns] with rows - 1 divisible '
                                 f'by the scale {self.config.scale}, got {size}')
        self.check_roots(opt['dataroot_gt'])
        self.paths = self.hr_paths(opt['dataroot_gt'])

    def _pair(self, gt, top, left, rows, cols, flip_rows=False, flip_cols=False, shifts=None):
        """(gt crop, interpolated thick-slice crop), each (rows, cols), from HR rows ``gt`` (H, W); ``shifts``: (H,)
        pixels each thick-slice row moves along the columns before the crop (:func:`shift_rows`), or None."""
        s = self.config.scale
        blurred = profile_filter(gt, self.config.kernel())
        if shifts is not None:
            blurred = shift_rows(blurred, shifts)
        blurred = blurred[top:top + rows, left:left + cols]
        gt = gt[top:top + rows, left:left + cols]
        if flip_rows:
            gt, blurred = gt[::-1], blurred[::-1]
        if flip_cols:
            gt, blurred = gt[:, ::-1], blurred[:, ::-1]
        return gt, np.clip(interpolate_slices(blurred[::s], s), 0, 1)

    def __getitem__(self, index):
        paths = self.paths[index]
        img = self._read(paths['gt_path'], 'gt')[..., 0]
        s, axis = self.config.scale, self.config.axis
        if self.opt['phase'] == 'train':
            rng = self.training_rng(index)
            gt = hr_rows(img, self.config, int(rng.integers(2)) if axis == 'random' else axis)
            rows, cols = self.crop
            if gt.shape[0] < rows or gt.shape[1] < cols:
                raise ValueError(f'dataset {self.opt.get("name")}: {paths["gt_path"]} gives {gt.shape[0]}x'
                                 f'{gt.shape[1]} HR rows x columns, smaller than gt_size {rows}x{cols}')
            top, left = int(rng.integers(gt.shape[0] - rows + 1)), int(rng.integers(gt.shape[1] - cols + 1))
            flips = rng.random(2) < 0.5
            shift = self.config.slice_shift and self.config.slice_shift / self.config.inplane_spacing  # pixels
            gt, lq = self._pair(gt, top, left, rows, cols, self.opt.get('use_vflip', False) and flips[0],
                                self.opt.get('use_hflip', False) and flips[1],
                                rng.normal(0, shift, len(gt)) if shift else None)
        else:
            if axis == 'random':
                key = os.path.basename(str(paths['gt_path']))
                axis = int(rng_for(self.opt.get('degradation_seed', 0), key, s).integers(2))
            gt = hr_rows(img, self.config, axis)
            gt, lq = self._pair(gt, 0, 0, output_length((len(gt) - 1) // s + 1, s), gt.shape[1])
        return self.to_item(gt[..., None], lq[..., None], paths)
