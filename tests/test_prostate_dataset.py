"""ProstateMRPairedDataset: 8/16-bit folders and LMDBs, crops, channels, on-the-fly degradation, BasicSR loaders."""
import copy

import cv2
import numpy as np
import pytest
import torch
from basicsr.data import build_dataloader, build_dataset
from basicsr.data.data_sampler import EnlargedSampler
from basicsr.data.prefetch_dataloader import CPUPrefetcher
from basicsr.utils import set_random_seed
from conftest import prostate_t2_slice

from mrsr_plugin.data import prostate_mr_dataset
from mrsr_plugin.data.degradations import degrade
from mrsr_plugin.data.mr_image import quantize
from mrsr_plugin.mrio.lmdb import LmdbImageWriter

SCALE = 2
# every stage that mixes pixels across the image (k-space truncation, motion) plus blur and noise
ON_THE_FLY = {'downsample': 'kspace', 'blur_sigma': [0.3, 0.8], 'noise_sigma': [0.005, 0.02], 'motion_prob': 1.0}


@pytest.fixture(scope='module')
def pairs(tmp_path_factory):
    """The same 3 pairs as 16-bit PNG folders, 8-bit PNG folders and 16-bit LMDBs; returns (root, HR uint16)."""
    root = tmp_path_factory.mktemp('pairs')
    rng = np.random.default_rng(0)
    hrs = [rng.integers(0, 65536, (48, 40), dtype=np.uint16) for _ in range(3)]
    lrs = [cv2.resize(hr, (20, 24), interpolation=cv2.INTER_AREA) for hr in hrs]
    for name, images in (('HR', hrs), ('LR', lrs)):
        for bits in (16, 8):
            folder = root / f'{name}{bits}'
            folder.mkdir()
            for i, img in enumerate(images):
                cv2.imwrite(str(folder / f'{i:03d}.png'), img if bits == 16 else (img >> 8).astype(np.uint8))
        writer = LmdbImageWriter(str(root / f'{name}.lmdb'), map_size=2**24)
        for i, img in enumerate(images):
            writer.put(f'{i:03d}', img)
        writer.close()
    return root, hrs


@pytest.fixture(scope='module')
def prostate_hr(tmp_path_factory):
    """A folder HR/ with one real prostate T2 slice (384x384) as a 16-bit PNG; returns the folder's parent."""
    root = tmp_path_factory.mktemp('prostate')
    (root / 'HR').mkdir()
    cv2.imwrite(str(root / 'HR' / 'slice.png'), quantize(prostate_t2_slice(), 16))
    return root


@pytest.fixture(scope='module')
def identical_slices(prostate_hr):
    """A folder same/ with four identical 48x48 crops of the prostate slice; returns its parent."""
    (prostate_hr / 'same').mkdir()
    for i in range(4):
        cv2.imwrite(str(prostate_hr / 'same' / f'{i}.png'), quantize(prostate_t2_slice()[168:216, 168:216], 16))
    return prostate_hr


def dataset(root, phase='val', gt='HR16', lq='LR16', backend='disk', **extra):
    opt = {'name': 't', 'type': 'ProstateMRPairedDataset', 'phase': phase, 'scale': SCALE,
           'io_backend': {'type': backend}, 'dataroot_gt': str(root / gt),
           'dataroot_lq': str(root / lq) if lq else None, 'gt_size': 16, 'use_hflip': True, 'use_rot': True}
    opt.update(extra)
    return build_dataset(opt)


@pytest.mark.parametrize('backend, gt, lq', [('disk', 'HR16', 'LR16'), ('lmdb', 'HR.lmdb', 'LR.lmdb')])
def test_16_bit_values_arrive_exactly(pairs, backend, gt, lq):
    root, hrs = pairs
    item = dataset(root, gt=gt, lq=lq, backend=backend)[1]
    assert item['gt'].dtype == torch.float32 and item['gt'].shape == (1, 48, 40) and item['lq'].shape == (1, 24, 20)
    np.testing.assert_array_equal(np.round(item['gt'][0].numpy() * 65535).astype(np.uint16), hrs[1])


def test_8_bit_folders_divide_by_255(pairs):
    root, hrs = pairs
    item = dataset(root, gt='HR8', lq='LR8')[0]
    np.testing.assert_allclose(item['gt'][0].numpy() * 255, hrs[0] >> 8, atol=1e-3)


def test_three_channels_repeat_the_slice(pairs):
    item = dataset(pairs[0], num_channels=3)[0]
    assert item['gt'].shape == (3, 48, 40) and torch.equal(item['gt'][0], item['gt'][2])


def test_training_crop_is_paired(pairs):
    root, _ = pairs
    item = dataset(root, phase='train', use_hflip=False, use_rot=False)[2]
    assert item['gt'].shape == (1, 16, 16) and item['lq'].shape == (1, 8, 8)


def test_on_the_fly_degradation_from_hr_only(pairs):
    root, _ = pairs
    deg = {'downsample': 'kspace', 'noise_sigma': 0.01}
    val = dataset(root, gt='HR.lmdb', lq=None, backend='lmdb', degradation=deg)
    first, again = val[0], val[0]
    assert first['lq'].shape == (1, 24, 20) and torch.equal(first['lq'], again['lq'])  # deterministic for val
    other_seed = dataset(root, gt='HR16', lq=None, degradation=deg, degradation_seed=1)[0]
    assert not torch.equal(first['lq'], other_seed['lq'])
    train = dataset(root, phase='train', lq=None, degradation=deg)
    assert train[0]['lq'].shape == (1, 8, 8) and train[0]['gt'].shape == (1, 16, 16)


def test_on_the_fly_training_lr_is_cut_from_the_whole_slice_lr(prostate_hr, monkeypatch):
    """Training degrades the whole slice, then crops: the LR patch equals the same region of the whole slice's LR
    for the same draw. (Degrading the crop instead wraps k-space truncation and motion around the crop's borders.)"""
    draws = []  # (HR that degrade got, a copy of its generator before the draw)

    def recording_degrade(hr, scale, config, rng):
        draws.append((hr, copy.deepcopy(rng)))
        return degrade(hr, scale, config, rng)

    monkeypatch.setattr(prostate_mr_dataset, 'degrade', recording_degrade)
    train = dataset(prostate_hr, phase='train', gt='HR', lq=None, degradation=ON_THE_FLY, gt_size=96, use_hflip=False,
                    use_rot=False)
    whole = cv2.imread(str(prostate_hr / 'HR' / 'slice.png'), cv2.IMREAD_UNCHANGED).astype(np.float32) / 65535
    for _ in range(3):
        item = train[0]
        gt, lq = item['gt'][0].numpy(), item['lq'][0].numpy()
        top, left = np.unravel_index(cv2.matchTemplate(whole, gt, cv2.TM_SQDIFF).argmin(), (289, 289))
        np.testing.assert_array_equal(whole[top:top + 96, left:left + 96], gt)  # where the crop came from
        assert top % SCALE == left % SCALE == 0
        whole_lr = degrade(whole, SCALE, ON_THE_FLY, draws[-1][1])
        np.testing.assert_array_equal(lq, whole_lr[top // SCALE:top // SCALE + 48, left // SCALE:left // SCALE + 48])
    assert len(draws) == 3


def loader_draws(root, seed, num_workers, epochs=2):
    """LR patches of every batch of ``epochs`` epochs of a BasicSR training loader over identical slices, whole
    slices as patches (no crop or flip to vary): (epochs * 4, 24, 24). Seeded as BasicSR's train.py seeds it."""
    set_random_seed(seed)
    train = dataset(root, phase='train', gt='same', lq=None, degradation=ON_THE_FLY, gt_size=48, use_hflip=False,
                    use_rot=False)
    opt = {'phase': 'train', 'num_worker_per_gpu': num_workers, 'batch_size_per_gpu': 1, 'pin_memory': False}
    loader = build_dataloader(train, opt, num_gpu=0, sampler=range(len(train)), seed=seed)
    return np.stack([batch['lq'][0, 0].numpy() for _ in range(epochs) for batch in loader])


@pytest.mark.parametrize('num_workers', [2, 0])
def test_on_the_fly_draws_differ_between_epochs_and_workers_and_repeat_for_a_seed(identical_slices, num_workers):
    """Four identical slices, one per batch, workers taking turns, the same order in both epochs: every sample of
    both epochs gets its own noise and motion, and a second run with the same seed gets the same ones."""
    draws = loader_draws(identical_slices, 0, num_workers)
    distinct = len({lq.tobytes() for lq in draws})
    assert len(draws) == distinct == 8, f'{distinct} different LR patches in {len(draws)} samples'
    np.testing.assert_array_equal(loader_draws(identical_slices, 0, num_workers), draws)
    assert not np.array_equal(loader_draws(identical_slices, 1, num_workers), draws)


def test_missing_lq_without_degradation_is_a_clear_error(pairs):
    with pytest.raises(ValueError, match='dataroot_lq'):
        dataset(pairs[0], lq=None)
    with pytest.raises(FileNotFoundError, match='nowhere'):
        dataset(pairs[0], gt='nowhere')
    with pytest.raises(ValueError, match='gt_size 15 is not divisible by scale 2'):
        dataset(pairs[0], phase='train', gt_size=15)


def test_basicsr_loader_with_workers_and_enlarged_sampler(pairs):
    root, _ = pairs
    train_set = dataset(root, phase='train', gt='HR.lmdb', lq='LR.lmdb', backend='lmdb')
    opt = {'phase': 'train', 'num_worker_per_gpu': 2, 'batch_size_per_gpu': 2, 'pin_memory': False}
    sampler = EnlargedSampler(train_set, num_replicas=2, rank=1, ratio=4)
    loader = build_dataloader(train_set, opt, num_gpu=0, dist=True, sampler=sampler, seed=0)
    prefetcher = CPUPrefetcher(loader)
    batches = []
    batch = prefetcher.next()
    while batch is not None:
        batches.append(batch)
        batch = prefetcher.next()
    assert len(batches) == 3 and batches[0]['gt'].shape == (2, 1, 16, 16)  # 3 * 4 / 2 replicas / batch 2
