"""calculate_mr_psnr / calculate_mr_ssim: hand-computed cases, scikit-image on 16-bit data, registration, errors."""
import cv2
import numpy as np
import pytest
from basicsr.metrics import calculate_metric
from basicsr.metrics.psnr_ssim import calculate_psnr
from basicsr.utils.registry import METRIC_REGISTRY
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from mrsr_plugin.metrics.mr_metric import calculate_mr_psnr, calculate_mr_ssim, foreground_mask


@pytest.fixture(scope='module')
def pair16():
    """Smooth 16-bit GT (blurred noise, 96x80) and an SR with small smooth errors: uint16 (H, W) each."""
    rng = np.random.default_rng(0)
    gt = cv2.GaussianBlur(rng.random((96, 80)), (0, 0), 3)
    gt = (gt - gt.min()) / (gt.max() - gt.min())
    sr = np.clip(gt + cv2.GaussianBlur(rng.normal(0, 0.01, gt.shape), (0, 0), 1), 0, 1)
    return np.round(sr * 65535).astype(np.uint16), np.round(gt * 65535).astype(np.uint16)


def _skimage_ssim(gt, sr, data_range):
    return structural_similarity(gt, sr, data_range=data_range, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False)


def test_foreground_mask_keeps_tissue_and_leaves_out_air():
    """A synthetic slice: noisy air (up to 0.08, some specks above the 0.05 threshold) around a body disc of tissue
    0.3-0.9 with a dark hole (rectal gas, 0.0) inside: the mask is the disc with its hole, no air speck."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:96, :96]
    body = (y - 48)**2 + (x - 48)**2 < 30**2
    gas = (y - 48)**2 + (x - 40)**2 < 5**2
    img = np.abs(rng.normal(0, 0.02, (96, 96)))
    img[body] = rng.uniform(0.3, 0.9, body.sum())
    img[gas] = 0.0
    assert (img[~body] > 0.05).sum() > 10  # specks of air above the threshold
    assert np.array_equal(foreground_mask(img, 0.05), body)
    assert np.array_equal(foreground_mask(img * 4, 0.05, data_range=4.0), body)


def test_psnr_by_hand():
    gt = np.zeros((16, 16))
    assert calculate_mr_psnr(np.full((16, 16), 0.1), gt) == pytest.approx(20.0, abs=1e-12)
    assert calculate_mr_psnr(np.full((16, 16), 0.1), gt, data_range=2.0) == pytest.approx(10 * np.log10(4 / 0.01))
    assert calculate_mr_psnr(gt, gt) == float('inf')


def test_psnr_crop_border_excludes_a_corrupted_border():
    gt = np.zeros((16, 16))
    sr = np.full((16, 16), 0.1)
    sr[:2], sr[-2:], sr[:, :2], sr[:, -2:] = 1, 1, 1, 1
    assert calculate_mr_psnr(sr, gt, crop_border=2) == pytest.approx(20.0, abs=1e-12)
    assert calculate_mr_psnr(sr, gt) < 10


def test_psnr_foreground_mask_counts_only_the_foreground():
    gt = np.zeros((8, 8))
    gt[:, :4] = 0.5  # foreground: left half
    sr = gt.copy()
    sr[:, :4] += 0.1  # error 0.1 in the foreground
    sr[:, 4:] = 0.3  # large error in the background air
    assert calculate_mr_psnr(sr, gt, foreground_threshold=0.2) == pytest.approx(20.0, abs=1e-12)
    # whole image: MSE = (0.01 + 0.09) / 2
    assert calculate_mr_psnr(sr, gt) == pytest.approx(10 * np.log10(1 / 0.05))
    # threshold in data_range units: 0.2 * 2 = 0.4 still separates the halves
    assert calculate_mr_psnr(sr, gt, data_range=2.0, foreground_threshold=0.2) == pytest.approx(10 * np.log10(400))


def test_psnr_matches_skimage_on_16_bit(pair16):
    sr16, gt16 = pair16
    sr, gt = sr16 / 65535., gt16 / 65535.
    assert calculate_mr_psnr(sr, gt) == pytest.approx(peak_signal_noise_ratio(gt, sr, data_range=1.0), abs=1e-9)
    assert calculate_mr_psnr(sr16, gt16, data_range=65535) == pytest.approx(
        peak_signal_noise_ratio(gt16, sr16, data_range=65535), abs=1e-9)


def test_ssim_matches_skimage_on_16_bit(pair16):
    sr16, gt16 = pair16
    sr, gt = sr16 / 65535., gt16 / 65535.
    assert calculate_mr_ssim(sr, gt) == pytest.approx(_skimage_ssim(gt, sr, 1.0), abs=1e-9)
    assert calculate_mr_ssim(sr16, gt16, data_range=65535) == pytest.approx(_skimage_ssim(gt16, sr16, 65535), abs=1e-9)
    # crop_border crops first, then the window handling is skimage's on the crop
    assert calculate_mr_ssim(sr, gt, crop_border=4) == pytest.approx(_skimage_ssim(gt[4:-4, 4:-4], sr[4:-4, 4:-4], 1.0),
                                                                      abs=1e-9)
    assert calculate_mr_ssim(gt, gt) == pytest.approx(1.0, abs=1e-12)


def test_ssim_foreground_mask_averages_the_map_over_foreground_centres(pair16):
    sr16, gt16 = pair16
    sr, gt = sr16 / 65535., gt16 / 65535.
    _, ssim_map = structural_similarity(gt, sr, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False, full=True)
    mask = foreground_mask(gt, 0.5)
    assert 0.2 < mask.mean() < 0.8
    expected = ssim_map[5:-5, 5:-5][mask[5:-5, 5:-5]].mean()
    assert calculate_mr_ssim(sr, gt, foreground_threshold=0.5) == pytest.approx(expected, abs=1e-9)
    assert calculate_mr_ssim(sr, gt, foreground_threshold=0.5) != pytest.approx(calculate_mr_ssim(sr, gt), abs=1e-6)


@pytest.mark.parametrize('metric', [calculate_mr_psnr, calculate_mr_ssim])
def test_three_identical_channels_equal_one_channel(pair16, metric):
    sr, gt = (x / 65535. for x in pair16)
    one = metric(sr, gt, crop_border=2, foreground_threshold=0.1)
    assert metric(sr[..., None], gt[..., None], crop_border=2, foreground_threshold=0.1) == one
    assert metric(np.repeat(sr[..., None], 3, 2), np.repeat(gt[..., None], 3, 2), crop_border=2,
                  foreground_threshold=0.1) == pytest.approx(one, abs=1e-12)


def test_basicsr_8_bit_psnr_differs_on_16_bit_data(pair16):
    """Rounding to 256 levels adds about 1/12 LSB^2 of noise: on a close SR the 8-bit PSNR misses the float one."""
    sr16, gt16 = pair16
    sr, gt = sr16 / 65535., gt16 / 65535.
    sr8, gt8 = (np.round(x * 255).astype(np.uint8) for x in (sr, gt))
    assert abs(calculate_psnr(sr8, gt8, crop_border=0) - calculate_mr_psnr(sr, gt)) > 0.5


def test_registered_with_float_input_and_usable_from_options(pair16):
    sr, gt = (x / 65535. for x in pair16)
    for name, fn in (('calculate_mr_psnr', calculate_mr_psnr), ('calculate_mr_ssim', calculate_mr_ssim)):
        assert METRIC_REGISTRY.get(name) is fn and fn.float_input is True
    opt = {'type': 'calculate_mr_psnr', 'crop_border': 2, 'test_y_channel': False}  # BasicSR keys are ignored
    assert calculate_metric({'img': sr, 'img2': gt}, opt) == calculate_mr_psnr(sr, gt, crop_border=2)
    assert not hasattr(calculate_psnr, 'float_input')


@pytest.mark.parametrize('metric', [calculate_mr_psnr, calculate_mr_ssim])
def test_bad_inputs_raise_value_error(metric):
    img = np.zeros((16, 16))
    with pytest.raises(ValueError, match=r'\(16, 16\).*\(16, 17\)'):
        metric(img, np.zeros((16, 17)))
    with pytest.raises(ValueError, match='Empty foreground'):
        metric(img, img, foreground_threshold=0.5)
    with pytest.raises(ValueError, match='C 1 or 3'):
        metric(np.zeros((16, 16, 2)), np.zeros((16, 16, 2)))
    with pytest.raises(ValueError, match='crop_border'):
        metric(img, img, crop_border=8)
    with pytest.raises(ValueError, match='data_range'):
        metric(img, img, data_range=0)


def test_ssim_needs_one_whole_window():
    with pytest.raises(ValueError, match='11x11'):
        calculate_mr_ssim(np.zeros((16, 16)), np.zeros((16, 16)), crop_border=3)
