"""PSNR and SSIM for MR images on float data over the full dynamic range (registered in METRIC_REGISTRY).

BasicSR's ``calculate_psnr`` / ``calculate_ssim`` take 8-bit images and assume a peak of 255; these take float (or
raw integer) images in the units of ``data_range``, compute in float64 without rounding, and can restrict the average
to the foreground (background air inflates both metrics; :func:`foreground_mask` is the rule). MR is
single-channel: a 3-channel input (the paper's, the slice repeated) is reduced to its channel mean first.

Both functions carry ``float_input = True``, which tells :class:`mrsr_plugin.models.mr_validation.MRValidationMixin`
to pass them float images in [0, 1] (``data_range`` 1.0) instead of BasicSR's 8-bit ``tensor2img`` images.
"""
import cv2
import numpy as np
from basicsr.utils.registry import METRIC_REGISTRY

# Wang et al. 2004 (as BasicSR's calculate_ssim and scikit-image's gaussian_weights=True, use_sample_covariance=False)
SSIM_WIN_SIZE = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
# The evaluation's foreground threshold (fraction of data_range, for :func:`foreground_mask`). On the embedded
# prostate data (0.5 / 99.5 percentile window) 0.05 keeps 93-97 % of a slice: the zero rows outside the field of view
# and the air go, dark muscle stays; at 0.1 dark muscle touching the image edge is lost.
FOREGROUND_THRESHOLD = 0.05


def grey_pair(img, img2, crop_border, data_range):
    """(H, W) or (H, W, C) arrays with C in (1, 3) -> two float64 (H - 2 * crop_border, W - 2 * crop_border); raises
    ValueError for a data_range that is not positive, as for the shapes."""
    if not data_range > 0:
        raise ValueError(f'data_range must be positive, got {data_range}.')
    if img.shape != img2.shape:
        raise ValueError(f'Image shapes are different: {img.shape} (img) and {img2.shape} (img2).')
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (1, 3)):
        raise ValueError(f'Expected an (H, W) or (H, W, C) image with C 1 or 3, got shape {img.shape}.')
    h, w = img.shape[:2]
    if min(h, w) <= 2 * crop_border:
        raise ValueError(f'crop_border {crop_border} leaves nothing of an image of {h}x{w}.')
    pair = []
    for x in (img, img2):
        x = x.astype(np.float64)
        if x.ndim == 3:
            x = x.mean(axis=2)
        pair.append(x[crop_border:h - crop_border, crop_border:w - crop_border])
    return pair


def foreground_mask(gt, foreground_threshold, data_range=1.0):
    """The plugin's one foreground rule, on the ground truth only (every model is scored on the same pixels).

    ``gt > foreground_threshold * data_range``, then a binary opening with a 3x3 square (drops isolated noise pixels
    of the air above the threshold) and hole filling (dark tissue enclosed by the body, such as cortical bone or
    rectal gas, stays in). scipy.ndimage's erosion treats pixels beyond the border as background.

    Args:
        gt (ndarray): (H, W) ground truth in the units of ``data_range``.
        foreground_threshold (float): Fraction of ``data_range``.
        data_range (float): Peak-to-peak range of the data. Default: 1.0.

    Returns:
        ndarray: bool (H, W).
    """
    from scipy import ndimage
    mask = ndimage.binary_opening(gt > foreground_threshold * data_range, structure=np.ones((3, 3), bool))
    return ndimage.binary_fill_holes(mask)


def foreground(gt, foreground_threshold, data_range, inner=0):
    """:func:`foreground_mask` of ``gt`` less ``inner`` pixels at each side (all True for None); raises if empty."""
    if foreground_threshold is None:
        mask = np.ones(gt.shape, bool)
    else:
        mask = foreground_mask(gt, foreground_threshold, data_range)
    mask = mask[inner:mask.shape[0] - inner, inner:mask.shape[1] - inner]
    if not mask.any():
        raise ValueError(f'Empty foreground: no ground-truth pixel above foreground_threshold {foreground_threshold} '
                         f'* data_range {data_range} (after crop_border and, for SSIM, the window margin).')
    return mask


@METRIC_REGISTRY.register()
def calculate_mr_psnr(img, img2, crop_border=0, data_range=1.0, foreground_threshold=None, **kwargs):
    """PSNR of a float MR image, ``10 * log10(data_range**2 / MSE)`` in float64.

    Args:
        img (ndarray): SR image, (H, W) or (H, W, C) with C 1 or 3, in the units of ``data_range``.
        img2 (ndarray): GT image, same shape.
        crop_border (int): Pixels left out at each side. Default: 0.
        data_range (float): Peak-to-peak range of the data (1.0 for [0, 1] floats, 65535 for raw uint16).
            Default: 1.0.
        foreground_threshold (float | None): If set, the MSE is taken over the pixels of
            ``foreground_mask(img2, foreground_threshold, data_range)`` only. Default: None (whole image).

    Returns:
        float: PSNR in dB; ``inf`` for identical images.
    """
    img, img2 = grey_pair(img, img2, crop_border, data_range)
    mask = foreground(img2, foreground_threshold, data_range)
    mse = np.mean((img[mask] - img2[mask])**2)
    if mse == 0:
        return float('inf')
    return float(10. * np.log10(data_range**2 / mse))


def ssim_map(img, img2, data_range):
    """SSIM map of two float64 (H, W) images over the windows that lie inside them: (H - 10, W - 10).

    Gaussian window 11x11, sigma 1.5, population (co)variances. Only 'valid' windows are kept, which is exactly what
    scikit-image keeps of its reflect-padded map when it crops ``(win_size - 1) // 2`` at each side.
    """
    if min(img.shape) < SSIM_WIN_SIZE:
        raise ValueError(f'SSIM needs at least {SSIM_WIN_SIZE}x{SSIM_WIN_SIZE} pixels after crop_border, '
                         f'got {img.shape[0]}x{img.shape[1]}.')
    c1, c2 = (SSIM_K1 * data_range)**2, (SSIM_K2 * data_range)**2
    kernel = cv2.getGaussianKernel(SSIM_WIN_SIZE, SSIM_SIGMA, cv2.CV_64F)
    pad = SSIM_WIN_SIZE // 2

    def filt(x):
        return cv2.sepFilter2D(x, cv2.CV_64F, kernel, kernel)[pad:-pad, pad:-pad]

    mu1, mu2 = filt(img), filt(img2)
    sigma1_sq = filt(img * img) - mu1**2
    sigma2_sq = filt(img2 * img2) - mu2**2
    sigma12 = filt(img * img2) - mu1 * mu2
    return ((2 * mu1 * mu2 + c1) * (2 * sigma12 + c2)) / ((mu1**2 + mu2**2 + c1) * (sigma1_sq + sigma2_sq + c2))


@METRIC_REGISTRY.register()
def calculate_mr_ssim(img, img2, crop_border=0, data_range=1.0, foreground_threshold=None, **kwargs):
    """SSIM (Wang et al. 2004) of a float MR image in float64, with ``C1 = (0.01 * data_range)**2``,
    ``C2 = (0.03 * data_range)**2``.

    The SSIM map covers the window centres whose 11x11 Gaussian window lies inside the (cropped) image ('valid'
    windows, 5 pixels less at each side). Without a mask its mean equals scikit-image's
    ``structural_similarity(img2, img, data_range=data_range, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False)`` on the same crop. With ``foreground_threshold`` the map is averaged over the
    centres in ``foreground_mask(img2, foreground_threshold, data_range)``; windows still see their whole
    neighbourhood.

    Args:
        img (ndarray): SR image, (H, W) or (H, W, C) with C 1 or 3, in the units of ``data_range``.
        img2 (ndarray): GT image, same shape.
        crop_border (int): Pixels left out at each side before the windows. Default: 0.
        data_range (float): Peak-to-peak range of the data. Default: 1.0.
        foreground_threshold (float | None): Average over foreground centres only. Default: None (all).

    Returns:
        float: Mean SSIM.
    """
    img, img2 = grey_pair(img, img2, crop_border, data_range)
    values = ssim_map(img, img2, data_range)
    mask = foreground(img2, foreground_threshold, data_range, inner=SSIM_WIN_SIZE // 2)
    return float(values[mask].mean())


calculate_mr_psnr.float_input = True
calculate_mr_ssim.float_input = True
