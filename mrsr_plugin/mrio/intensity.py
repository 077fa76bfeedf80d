"""Intensity normalisation of MR volumes: the window that maps a series to [0, 1] for training and inference."""
import numpy as np

DEFAULT_NORMALIZE = 'percentile'  # mrsr-prepare's default, and mrsr-infer's for checkpoints that do not say
DEFAULT_PERCENTILES = (0.5, 99.5)


def normalise(volume, method, percentiles, peak=None, clip=True):
    """(S, H, W) volume -> float64 with the window mapped to [0, 1], and the window's (low, high) intensities.

    percentile: robust window between two intensity percentiles of the whole volume (default 0.5, 99.5);
    minmax: the volume's minimum and maximum; none: divide by ``peak`` (the bit depth's maximum, image inputs only).
    ``clip`` clips the result to [0, 1], as for training data; without it, intensities outside the window map to
    values below 0 or above 1 (inference keeps them).
    """
    if method == 'percentile':
        low, high = (float(v) for v in np.percentile(volume, percentiles))
    elif method == 'minmax':
        low, high = float(volume.min()), float(volume.max())
    elif peak is None:
        raise ValueError('--normalize none applies to PNG/TIFF input only; DICOM and volume files need percentile or '
                         'minmax')
    else:
        low, high = 0.0, float(peak)
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError(f'intensity window [{low}, {high}] is not finite (NaN or infinite values in the volume)')
    if high <= low:
        raise ValueError(f'constant intensity {low} within the normalisation window')
    normalised = (np.asarray(volume, np.float64) - low) / (high - low)
    return np.clip(normalised, 0, 1) if clip else normalised, (low, high)
