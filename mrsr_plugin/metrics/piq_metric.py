"""Perceptual and error metrics for float MR images, from piq and SciPy (registered in METRIC_REGISTRY).

MS-SSIM, HaarPSI, VSI and GMSD are piq's functions (piq 0.8), LPIPS and DISTS piq's networks (weights from
``mrsr-fetch-vgg``: :mod:`mrsr_plugin.apps.fetch_vgg`); NRMSE and HFEN are formulas over NumPy and SciPy. Every
function takes BasicSR's arguments (``img`` the SR image, ``img2`` the ground truth, (H, W) or (H, W, C) with C 1 or
3, ``crop_border``, ``data_range``) and, like :mod:`mrsr_plugin.metrics.mr_metric`, reduces 3 channels to their mean,
crops the border and computes on the float data, clipped to [0, data_range] as piq requires (SR outputs overshoot).
All carry ``float_input = True`` and ``higher_is_better``; give ``better: lower`` in ``val.metrics`` for GMSD, NRMSE,
HFEN, LPIPS and DISTS. How each sees a single-channel slice (VSI, LPIPS and DISTS get it repeated to grey RGB, so
VSI's colour terms are exactly 1; HaarPSI uses it as its luminance): docs/evaluation.md#metrics.
"""
import functools

import numpy as np
import piq
import torch
from basicsr.utils.registry import METRIC_REGISTRY
from scipy import ndimage

from mrsr_plugin.errors import WeightsMissingError
from mrsr_plugin.metrics.mr_metric import foreground, grey_pair

# Ravishankar & Bresler 2011: Laplacian of Gaussian with sigma 1.5 on a 15x15 support (radius 7 = truncate * sigma)
HFEN_SIGMA = 1.5
HFEN_TRUNCATE = 7 / HFEN_SIGMA
# piq's networks: the files of the weights manifest's pretrained section they need (mrsr_plugin/pretrained_vgg.py)
PERCEPTUAL = {'lpips': ('vgg16_imagenet_features', 'lpips_vgg16_linear'),
              'dists': ('vgg16_imagenet_features', 'dists_vgg16_alpha_beta')}


def _tensors(img, img2, crop_border, data_range, channels=1):
    """SR and GT -> two float32 (1, channels, H', W') tensors, cropped, grey, clipped to [0, data_range].

    float32, not float64: piq's float64 convolutions are about 13x slower on a CPU (MS-SSIM of a 380x380 slice 430
    against 34 ms, measured) and the scores differ by about 1e-6."""
    return [
        torch.from_numpy(np.clip(x, 0, data_range).astype(np.float32))[None, None].repeat(1, channels, 1, 1)
        for x in grey_pair(img, img2, crop_border, data_range)
    ]


@METRIC_REGISTRY.register()
def calculate_mr_ms_ssim(img, img2, crop_border=0, data_range=1.0, **kwargs):
    """Multi-scale SSIM (Wang et al. 2003), ``piq.multi_scale_ssim`` with its defaults: 5 scales with the weights
    (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), 11x11 Gaussian window of sigma 1.5, K1 0.01, K2 0.03.

    The image after ``crop_border`` must be at least 161x161 (10 * 2**4 + 1; a 384x384 slice is fine, a 128x128 one
    raises ValueError). Higher is better, 1 for identical images.
    """
    x, y = _tensors(img, img2, crop_border, data_range)
    return float(piq.multi_scale_ssim(x, y, data_range=data_range))


@METRIC_REGISTRY.register()
def calculate_mr_haarpsi(img, img2, crop_border=0, data_range=1.0, **kwargs):
    """HaarPSI (Reisenhofer et al. 2018), ``piq.haarpsi`` with its defaults (3 scales, 2x subsampling, C 30,
    alpha 4.2) on the grey slice: the luminance term only. Needs 16x16 pixels; higher is better, 1 for identical
    images."""
    x, y = _tensors(img, img2, crop_border, data_range)
    return float(piq.haarpsi(x, y, data_range=data_range))


@METRIC_REGISTRY.register()
def calculate_mr_vsi(img, img2, crop_border=0, data_range=1.0, **kwargs):
    """VSI (Zhang et al. 2014), ``piq.vsi`` with its defaults on the slice repeated to 3 channels (its colour terms
    are then 1); higher is better, 1 for identical images."""
    x, y = _tensors(img, img2, crop_border, data_range, channels=3)
    return float(piq.vsi(x, y, data_range=data_range))


@METRIC_REGISTRY.register()
def calculate_mr_gmsd(img, img2, crop_border=0, data_range=1.0, **kwargs):
    """GMSD (Xue et al. 2014), ``piq.gmsd`` with its defaults (2x average-pool subsampling, Prewitt gradients,
    T = 170 / 255**2 on [0, 1]); lower is better, 0 for identical images."""
    x, y = _tensors(img, img2, crop_border, data_range)
    return float(piq.gmsd(x, y, data_range=data_range))


@METRIC_REGISTRY.register()
def calculate_mr_nrmse(img, img2, crop_border=0, data_range=1.0, foreground_threshold=None, **kwargs):
    """Normalised RMSE, ``||img - img2||_2 / ||img2||_2`` over the (foreground) pixels: RMSE relative to the
    ground truth's root mean square (scikit-image's ``normalized_root_mse`` with ``normalization='euclidean'``), not
    to ``data_range``, so it does not merely restate PSNR's scale. Lower is better, 0 for identical images.

    Args:
        foreground_threshold (float | None): Over :func:`mrsr_plugin.metrics.mr_metric.foreground_mask` of the
            ground truth only. Default: None (whole image).
    """
    img, img2 = grey_pair(img, img2, crop_border, data_range)
    mask = foreground(img2, foreground_threshold, data_range)
    return float(np.linalg.norm(img[mask] - img2[mask]) / np.linalg.norm(img2[mask]))


@METRIC_REGISTRY.register()
def calculate_mr_hfen(img, img2, crop_border=0, data_range=1.0, foreground_threshold=None, **kwargs):
    """High-frequency error norm (Ravishankar & Bresler, IEEE TMI 2011): ``||LoG(img) - LoG(img2)||_2 /
    ||LoG(img2)||_2`` with ``scipy.ndimage.gaussian_laplace`` (sigma 1.5, 15x15 support, reflected border) on the
    cropped images. Lower is better, 0 for identical images; blind to changes of low frequency.

    Args:
        foreground_threshold (float | None): The norms over the ground truth's foreground mask only. Default: None.
    """
    img, img2 = grey_pair(img, img2, crop_border, data_range)
    mask = foreground(img2, foreground_threshold, data_range)
    log, log2 = (ndimage.gaussian_laplace(x, HFEN_SIGMA, truncate=HFEN_TRUNCATE)[mask] for x in (img, img2))
    return float(np.linalg.norm(log - log2) / np.linalg.norm(log2))


def missing_perceptual_weights(kind, cache=None):
    """One line naming the missing weight files of ``kind`` ('lpips' or 'dists') in the weights cache (default:
    :func:`mrsr_plugin.weights.cache_dir`) and the command that makes them, or None when all are present."""
    from mrsr_plugin.weights import missing_pretrained
    message = missing_pretrained(PERCEPTUAL[kind], cache)
    return f'{kind.upper()} needs {message}' if message else None


@functools.lru_cache(maxsize=None)
def _perceptual_network(kind, cache):
    """``piq.LPIPS()`` / ``piq.DISTS()`` with the converted weights of ``cache``: piq's classes, initialised as
    their own ``__init__`` does (piq 0.8) but with the weights from the files instead of torch hub's downloads."""
    from mrsr_plugin.pretrained_vgg import LPIPS_CHANNELS, load_state, vgg16_features
    from piq.perceptual import VGG16_LAYERS, ContentLoss
    message = missing_perceptual_weights(kind, cache)
    if message:
        raise WeightsMissingError(message)
    features = vgg16_features(cache)
    layers = [VGG16_LAYERS[n] for n in ('relu1_2', 'relu2_2', 'relu3_3', 'relu4_3', 'relu5_3')]
    if kind == 'lpips':
        net, linear = piq.LPIPS.__new__(piq.LPIPS), load_state('lpips_vgg16_linear', cache)
        ContentLoss.__init__(net, features, layers=layers, weights=[linear[f'lin{i}.model.1.weight'] for i in range(5)],
                             normalize_features=True)
    else:
        net, alpha_beta = piq.DISTS.__new__(piq.DISTS), load_state('dists_vgg16_alpha_beta', cache)
        channels = [3, *LPIPS_CHANNELS]  # the image itself, then the five stages
        ContentLoss.__init__(net, features, layers=layers, weights=[
            *torch.split(alpha_beta['alpha'], channels, dim=1), *torch.split(alpha_beta['beta'], channels, dim=1)
        ], replace_pooling=True, allow_layers_weights_mismatch=True)
    return net.eval()


def _perceptual(kind, img, img2, crop_border, data_range):
    from mrsr_plugin.weights import cache_dir
    x, y = (t / data_range for t in _tensors(img, img2, crop_border, data_range, channels=3))
    with torch.no_grad():
        return float(_perceptual_network(kind, cache_dir())(x, y))


@METRIC_REGISTRY.register()
def calculate_mr_lpips(img, img2, crop_border=0, data_range=1.0, **kwargs):
    """LPIPS-VGG16 (Zhang et al. 2018), ``piq.LPIPS()`` on the grey slice repeated to RGB; lower is better, 0 for
    identical images. Raises :class:`WeightsMissingError` (one line: which file, which command makes it)
    when its weights are not in the weights cache."""
    return _perceptual('lpips', img, img2, crop_border, data_range)


@METRIC_REGISTRY.register()
def calculate_mr_dists(img, img2, crop_border=0, data_range=1.0, **kwargs):
    """DISTS (Ding et al. 2020), ``piq.DISTS()`` on the grey slice repeated to RGB (piq resizes the shorter side to
    256 first); a distance: lower is better, 0 for identical images. Raises :class:`WeightsMissingError`
    when its weights are not in the weights cache."""
    return _perceptual('dists', img, img2, crop_border, data_range)


for _metric, _higher in ((calculate_mr_ms_ssim, True), (calculate_mr_haarpsi, True), (calculate_mr_vsi, True),
                         (calculate_mr_gmsd, False), (calculate_mr_nrmse, False), (calculate_mr_hfen, False),
                         (calculate_mr_lpips, False), (calculate_mr_dists, False)):
    _metric.float_input, _metric.higher_is_better = True, _higher
