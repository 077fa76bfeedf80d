"""Through-plane super-resolution against a real reference: the same session's sagittal and coronal series.

    python scripts/evaluate_through_plane.py -w NAME --dicom AXIAL_SERIES --reference SAGITTAL CORONAL --json out.json

Prostate protocols acquire T2 in three planes minutes apart; the axial slice normal lies in the sagittal and coronal
image planes, where those series have fine pixels (0.625 mm in ``shared/data/prostatex_0218``), so they sample the
axial z direction at high resolution. Every series is read with :mod:`mrsr_plugin.mrio.dicom` (the series of a folder
with the most slices in the plane asked for) and normalised as ``scripts/lmdb_prepare.py`` does (0.5 / 99.5
percentile window, clipped to [0, 1]); its geometry is SimpleITK's (LPS = DICOM patient coordinates): origin the first
slice's ImagePositionPatient, axes ImageOrientationPatient's row and column directions and their normal.

Candidates on the kept-slice grid of the axial series (:func:`mrsr_plugin.apps.through_plane.volume_geometry`:
s (n - 1) + 1 slices, first slice on the first axial slice, z spacing / s): ``linear`` and ``cubic`` interpolation
along z (:func:`mrsr_plugin.data.slice_profile.interpolate_slices`) and the model
(:func:`mrsr_plugin.apps.through_plane.super_resolve_consistently`: both views, data consistency, as mrsr-infer
runs it), each clipped to [0, 1].

Per reference:

- region of interest: a box around a centre (default: the axial volume's centre; the prostate is near the centre of
  the field of view in these exams) of ``roi_mm`` along the axial series' row and column directions and unbounded
  along its normal: all of the axial stack's extent along z that the candidates cover;
- registration (:func:`register`): rigid (SimpleITK Euler3D, Mattes mutual information, three resolutions),
  initialised at identity (one FrameOfReferenceUID: the same patient coordinates), fixed = the reference, moving =
  the *acquired* axial series, within the region of interest, so that every candidate is treated identically;
- every candidate is resampled onto the reference grid through that transform (linear), averaged over the
  reference's own slice thickness (:func:`resample_slab`: a reference slice is a 3-mm slab); reference voxels the
  candidate grid does not cover everywhere across the slab (a ones-volume resampled the same way) are left out;
- metrics over the region (:func:`reference_metrics`): Pearson correlation; normalised mutual information
  (64-bin histogram, (H(A) + H(B)) / H(A, B), 1 to 2); PSNR (data range 1) and SSIM after a least-squares linear
  intensity fit of the candidate to the reference; and the correlation of z-derivatives: the derivative of
  candidate and reference along the axial slice normal (as registered), taken in each reference slice as the
  in-plane gradient projected on the normal's in-plane component;
- intervals (:func:`difference_intervals`): each candidate's difference to cubic in Pearson and the z-derivative
  correlation, with a percentile bootstrap over the reference's slices in the region (paired: every candidate and
  blur on the same resamples).
"""
import math
from dataclasses import dataclass, field

import numpy as np
import pydicom
import SimpleITK as sitk
from scipy import ndimage

from mrsr_plugin.apps.evaluation import bootstrap_weights
from mrsr_plugin.apps.through_plane import (check_acquisition, dicom_acquisition, super_resolve_consistently,
                                            volume_geometry)
from mrsr_plugin.data.slice_profile import interpolate_slices
from mrsr_plugin.errors import DicomInputError, MRSRUserError
from mrsr_plugin.metrics.mr_metric import SSIM_WIN_SIZE, ssim_map
from mrsr_plugin.mrio.dicom import load_series, scan_dicom_tree
from mrsr_plugin.mrio.intensity import DEFAULT_PERCENTILES, normalise
from mrsr_plugin.mrio.volume import read_volume

ROI_MM = 60.0  # the prostate (40-50 mm) with a margin, around the centre of the axial field of view
NMI_BINS = 64
SLAB_STEP = 0.5  # mm at most between the samples averaged across a reference slice's thickness
STACK_TOLERANCE = 0.05  # mm: slice positions further than this from one evenly spaced stack along the normal
METRICS = ('pearson', 'nmi', 'psnr', 'ssim', 'z_derivative_r')
CORRELATIONS = ('pearson', 'z_derivative_r')  # pooled over the region: bootstrapped by reference slice
INTERVAL_METHOD = (
    'percentile bootstrap over the reference slices that hold region voxels: each resample draws as many slices as '
    'there are, with replacement, and pools the drawn slices\' voxels; every candidate and blur is scored on the same '
    'resamples, so the differences to cubic are paired; at matched smoothing each candidate\'s best blur is chosen '
    'again in each resample')


@dataclass
class Stack:
    """A DICOM series as a SimpleITK image, normalised to [0, 1]."""
    image: sitk.Image  # float32, LPS geometry
    plane: str  # 'axial', 'sagittal' or 'coronal'
    description: str  # SeriesDescription
    frame_of_reference: str  # FrameOfReferenceUID
    thickness: float  # SliceThickness, mm (the slice spacing where absent)
    path: str  # the series' first file, for messages
    headers: list = field(repr=False)  # pydicom headers in slice order, without pixels

    @property
    def name(self):
        return f'{self.plane} {self.description}'.strip()


def read_stack(folder, planes):
    """The MR series of ``folder`` in one of ``planes`` with the most slices, normalised (module docstring).

    Raises:
        MRSRUserError: One line naming the folder or file: no such series, no slice geometry, slices that are not
            one evenly spaced stack along the normal, or constant intensity.
    """
    series = [s for s in scan_dicom_tree(folder)[0] if s.plane in planes]
    if not series:
        raise MRSRUserError(f'{folder}: no {" or ".join(planes)} MR series')
    series = max(series, key=lambda s: s.num_slices)
    first = series.files[0]
    headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in series.files]
    if (len(headers) < 2 or len(headers) != series.num_slices or series.orientation is None
            or not all(ds.get('ImagePositionPatient') and ds.get('PixelSpacing') for ds in headers)):
        raise DicomInputError(first, 'needs a series of 2 or more single-frame slices with ImageOrientationPatient, '
                              'ImagePositionPatient and PixelSpacing')
    row, column = np.asarray(series.orientation[:3]), np.asarray(series.orientation[3:])
    normal = np.cross(row, column)
    positions = np.array([ds.ImagePositionPatient for ds in headers], np.float64)
    along = (positions - positions[0]) @ normal
    step = along[-1] / (len(along) - 1)
    off_stack = positions - positions[0] - step * np.arange(len(along))[:, None] * normal
    if step <= 0 or np.abs(off_stack).max() > STACK_TOLERANCE:
        raise DicomInputError(first, 'its slices are not one evenly spaced stack along the slice normal')
    try:
        volume = normalise(load_series(series), 'percentile', DEFAULT_PERCENTILES)[0]
    except ValueError as err:
        raise DicomInputError(first, str(err)) from err
    image = sitk.GetImageFromArray(volume.astype(np.float32))
    row_spacing, column_spacing = (float(v) for v in headers[0].PixelSpacing)
    image.SetSpacing((column_spacing, row_spacing, float(step)))
    image.SetOrigin(tuple(positions[0]))
    image.SetDirection(tuple(np.stack([row, column, normal], axis=1).ravel()))
    thickness = dicom_acquisition(headers).thickness  # SliceThickness, the spacing where absent
    return Stack(image, series.plane, series.description, str(headers[0].get('FrameOfReferenceUID') or ''),
                 thickness, first, headers)


def image_on(array, spacing, origin, direction):
    """A (z, y, x) array as a float32 SimpleITK image of that geometry (x, y, z order, as ``GetSpacing()``)."""
    image = sitk.GetImageFromArray(np.asarray(array, np.float32))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    return image


def _axes(image):
    """(3, 3): columns the unit vectors of image axes x, y, z in patient coordinates."""
    return np.asarray(image.GetDirection()).reshape(3, 3)


def along_axis(image, point, axis):
    """(z, y, x): the signed distance (mm) of every voxel centre of ``image`` from ``point`` along ``axis``."""
    axes, spacing = _axes(image), image.GetSpacing()
    steps = [np.arange(n) * spacing[d] * (axes[:, d] @ axis) for d, n in enumerate(image.GetSize())]
    start = (np.asarray(image.GetOrigin()) - point) @ axis
    return start + steps[2][:, None, None] + steps[1][None, :, None] + steps[0][None, None, :]


def resample_slab(image, reference, transform, thickness, step=SLAB_STEP):
    """``image`` on ``reference``'s grid through ``transform`` (reference -> image points), averaged over a slab
    ``thickness`` mm thick along the reference's slice normal: the mean of n = ceil(thickness / step) linear
    samples at offsets ((k + 1/2) / n - 1/2) * thickness (the midpoint rule of a rect profile); 0 outside ``image``.

    Returns:
        ndarray: (z, y, x) float64 on ``reference``'s voxels.
    """
    count = max(1, math.ceil(thickness / step))
    normal, origin = _axes(reference)[:, 2], np.asarray(reference.GetOrigin())
    total = 0
    for k in range(count):
        shifted = tuple(origin + ((k + 0.5) / count - 0.5) * thickness * normal)
        out = sitk.Resample(image, reference.GetSize(), transform, sitk.sitkLinear, shifted, reference.GetSpacing(),
                            reference.GetDirection(), 0.0, sitk.sitkFloat32)
        total = total + sitk.GetArrayFromImage(out).astype(np.float64)
    return total / count


def coverage(image, reference, transform, thickness):
    """(z, y, x) bool: the reference voxels whose whole slab lies inside ``image``'s grid (a ones-volume resampled
    by :func:`resample_slab`)."""
    ones = sitk.Image(image.GetSize(), sitk.sitkFloat32) + 1.0
    ones.CopyInformation(image)
    return resample_slab(ones, reference, transform, thickness) > 1 - 1e-6


def register(fixed, moving, mask, centre, seed=1):
    """Rigid registration of ``moving`` to ``fixed`` within ``mask`` (a uint8 image on ``fixed``'s grid).

    Euler3D (rotation about ``centre`` + translation), initialised at identity; Mattes mutual information (32 bins,
    half of the masked voxels sampled at random, fixed seed); regular-step gradient descent with scales from the
    physical shift; three resolutions (shrink 4, 2, 1; smoothing 2, 1, 0 mm).

    Returns:
        tuple: (sitk.Euler3DTransform mapping ``fixed`` points to ``moving`` points, final metric value, the
        optimiser's stop condition).
    """
    transform = sitk.Euler3DTransform()
    transform.SetCenter(tuple(float(v) for v in centre))
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricFixedMask(mask)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(0.5, seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-3, numberOfIterations=200,
                                                    relaxationFactor=0.5, gradientMagnitudeTolerance=1e-8)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([4, 2, 1])
    method.SetSmoothingSigmasPerLevel([2.0, 1.0, 0.0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(transform, inPlace=True)
    method.Execute(fixed, moving)
    return transform, method.GetMetricValue(), method.GetOptimizerStopConditionDescription()


def nmi(a, b, bins=NMI_BINS):
    """Normalised mutual information (H(A) + H(B)) / H(A, B) of two samples, from their joint histogram."""
    joint = np.histogram2d(a, b, bins)[0]
    joint /= joint.sum()

    def entropy(p):
        p = p[p > 0]
        return -float(np.sum(p * np.log(p)))

    return (entropy(joint.sum(0)) + entropy(joint.sum(1))) / entropy(joint)


def z_derivative(volume, spacing, direction):
    """The derivative of each (y, x) slice of ``volume`` along the in-plane ``direction`` = (dx, dy) (components on
    the image's x and y axes, mm-based: np.gradient over the pixel spacing (sx, sy))."""
    dy, dx = np.gradient(volume, spacing[1], spacing[0], axis=(1, 2))
    return direction[0] * dx + direction[1] * dy


def reference_metrics(candidate, reference, roi, spacing, normal):
    """Metrics of a candidate resampled onto a reference, over ``roi`` (module docstring).

    Args:
        candidate, reference (ndarray): (z, y, x) on the reference's grid; ``reference`` in [0, 1].
        roi (ndarray): (z, y, x) bool.
        spacing (sequence[float]): The reference's (x, y, z) spacing, mm.
        normal (ndarray): (3,) the axial slice normal in the reference's axes (x, y, z components).

    Returns:
        tuple: (dict: ``pearson``, ``nmi``, ``psnr`` (dB) and ``ssim`` after the fit, ``z_derivative_r``, ``fit``
        (a, b); dict: :data:`CORRELATIONS` -> their :func:`slice_sums` over the region, for the intervals).
    """
    c, r = candidate[roi], reference[roi]
    (a, b), *_ = np.linalg.lstsq(np.stack([c, np.ones_like(c)], axis=1), r, rcond=None)
    fitted = a * candidate + b
    mse = float(np.mean((fitted[roi] - r)**2))
    window = ndimage.binary_erosion(roi, np.ones((1, SSIM_WIN_SIZE, SSIM_WIN_SIZE), bool))  # windows inside roi
    pad, ssim = SSIM_WIN_SIZE // 2, []
    for k in np.flatnonzero(window.any(axis=(1, 2))):
        rows, cols = np.flatnonzero(roi[k].any(1)), np.flatnonzero(roi[k].any(0))
        crop = np.s_[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        values = ssim_map(fitted[k][crop], reference[k][crop].astype(np.float64), 1.0)
        ssim.append(values[window[k][crop][pad:-pad, pad:-pad]])
    inner = ndimage.binary_erosion(roi, np.ones((1, 3, 3), bool))  # central differences inside roi
    dz_c, dz_r = (z_derivative(v, spacing, normal[:2]) for v in (candidate, reference))
    return ({'pearson': float(np.corrcoef(c, r)[0, 1]), 'nmi': nmi(c, r),
             'psnr': 10 * math.log10(1 / mse) if mse > 0 else float('inf'),
             'ssim': float(np.concatenate(ssim).mean()) if ssim else float('nan'),
             'z_derivative_r': float(np.corrcoef(dz_c[inner], dz_r[inner])[0, 1]), 'fit': [float(a), float(b)]},
            {'pearson': slice_sums(candidate, reference, roi), 'z_derivative_r': slice_sums(dz_c, dz_r, inner)})


def slice_sums(a, b, mask):
    """Per slice k of (z, y, x) ``a`` and ``b``, over ``mask[k]``: the count, sum a, sum b, sum a^2, sum b^2 and
    sum ab, (z, 6) float64: Pearson's r of the voxels of any multiset of slices follows from their summed rows
    (:func:`pearson_of_sums`)."""
    mask = mask.astype(np.float64)
    a, b = np.where(mask > 0, a, 0.0), np.where(mask > 0, b, 0.0)
    return np.stack([v.sum(axis=(1, 2)) for v in (mask, a, b, a * a, b * b, a * b)], axis=1)


def pearson_of_sums(sums):
    """Pearson's r from (..., 6) :func:`slice_sums` rows summed over slices (any common factor cancels): (...)."""
    n, sa, sb, saa, sbb, sab = np.moveaxis(np.asarray(sums, np.float64), -1, 0)
    return (sab - sa * sb / n) / np.sqrt((saa - sa * sa / n) * (sbb - sb * sb / n))


def difference_intervals(sums, slices, level=0.95, resamples=2000, seed=0):
    """Each candidate's difference to cubic in :data:`CORRELATIONS`, with a paired bootstrap interval over the
    reference's slices (:data:`INTERVAL_METHOD`).

    Args:
        sums (dict): sigma (0.0: no blur) -> {candidate: {metric: (z, 6) :func:`slice_sums`}}; 'cubic' among them.
        slices (ndarray): Indices of the reference slices that hold region voxels.
        level, resamples, seed: Of the percentile interval and of :func:`mrsr_plugin.apps.evaluation.bootstrap_weights`
            (one patient: the slices are resampled).

    Returns:
        dict: ``method``, ``level``, ``resamples``, ``seed``, ``slices``, ``to_cubic`` {candidate: {metric:
        {'diff', 'low', 'high'}}} without blur and, where more than one sigma was scored, ``best_to_cubic`` (each
        candidate at its best blur, chosen in each resample as in the point estimate).
    """
    weights = bootstrap_weights([0] * len(slices), resamples, seed)  # (B, K): slice weights, 1 / K per draw
    tail = 100 * (1 - level) / 2
    plain = sums[0.0]

    def r(sigma, name, metric):  # (1 + B,): the estimate, then the resamples
        rows = sums[sigma][name][metric][slices]
        return pearson_of_sums(np.concatenate([rows.sum(0, keepdims=True), weights @ rows]))

    def summary(diff):
        low, high = np.percentile(diff[1:], [tail, 100 - tail])
        return {'diff': float(diff[0]), 'low': float(low), 'high': float(high)}

    out = {'method': INTERVAL_METHOD, 'level': level, 'resamples': resamples, 'seed': seed, 'slices': len(slices),
           'to_cubic': {name: {m: summary(r(0.0, name, m) - r(0.0, 'cubic', m)) for m in CORRELATIONS}
                        for name in plain if name != 'cubic'}}
    if len(sums) > 1:
        def best(name, m):
            return np.max([r(sigma, name, m) for sigma in sums], axis=0)

        out['best_to_cubic'] = {name: {m: summary(best(name, m) - best('cubic', m)) for m in CORRELATIONS}
                                for name in plain if name != 'cubic'}
    return out


def evaluate_reference(axial, reference, candidates, scale, roi_mm=ROI_MM, roi_centre=None, smoothing=()):
    """Register ``reference`` to the acquired ``axial`` stack and score every candidate against it.

    Args:
        axial, reference (Stack): The thick-slice axial series and a sagittal or coronal one.
        candidates (dict): name -> (s (n - 1) + 1, y, x) volume on the axial kept-slice grid, or a SimpleITK image
            in patient coordinates on a grid of its own (another tool's output, :func:`external_candidate`).
        scale (int): s.
        roi_mm (float): Side of the region's box along the axial row and column directions, mm.
        roi_centre (sequence[float] | None): Its centre in patient coordinates (mm); None: the axial volume's centre.
        smoothing (sequence[float]): Gaussian sigmas (mm) of :func:`smoothed_metrics`; empty: none.

    Returns:
        dict: ``reference``, ``plane``, ``slice_thickness``, ``registration`` (``translation_mm``, ``rotation_deg``
        about x, y, z, ``centre_mm``, ``metric``, ``stop``), ``roi`` (``size_mm``, ``centre_mm``, ``voxels``,
        ``normal_in_plane``: the in-plane part of the axial normal, 1 when the reference plane contains it),
        ``metrics`` {candidate: :func:`reference_metrics`}, ``intervals`` (:func:`difference_intervals`; with
        'cubic' among the candidates) and, with ``smoothing``, ``smoothing`` (:func:`smoothed_metrics`).
    """
    ax = _axes(axial.image)
    centre = (np.asarray(axial.image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in
                                                                              axial.image.GetSize()]))
              if roi_centre is None else np.asarray(roi_centre, np.float64))
    box = np.ones(sitk.GetArrayViewFromImage(reference.image).shape, bool)
    for axis in (ax[:, 0], ax[:, 1]):
        box &= np.abs(along_axis(reference.image, centre, axis)) <= roi_mm / 2
    acquired = box & coverage(axial.image, reference.image, sitk.Transform(), reference.thickness)
    if not acquired.any():
        raise DicomInputError(reference.path, f'no voxel within the {roi_mm:g}-mm region of interest around '
                              f'{np.round(centre, 1).tolist()} mm that the axial series covers')
    z, y, x = (np.flatnonzero(acquired.any(axis=other)) for other in ((1, 2), (0, 2), (0, 1)))
    fixed = reference.image[x[0]:x[-1] + 1, y[0]:y[-1] + 1, z[0]:z[-1] + 1]
    box, acquired = (m[z[0]:z[-1] + 1, y[0]:y[-1] + 1, x[0]:x[-1] + 1] for m in (box, acquired))
    mask = sitk.GetImageFromArray(acquired.astype(np.uint8))
    mask.CopyInformation(fixed)
    transform, metric, stop = register(fixed, axial.image, mask, centre)

    grid = volume_geometry(axial.image.GetSpacing(), axial.image.GetOrigin(), axial.image.GetDirection(),
                           axial.image.GetSize(), scale)[:3]
    images = {name: volume if isinstance(volume, sitk.Image) else image_on(volume, *grid)
              for name, volume in candidates.items()}
    # the voxels every candidate covers, so that all are scored on the same ones; one coverage per distinct grid
    # (linear, cubic and the model share the kept-slice grid)
    grids = {(image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()): image
             for image in images.values()}
    roi = box
    for image in grids.values():
        roi = roi & coverage(image, fixed, transform, reference.thickness)
    target = sitk.GetArrayFromImage(fixed).astype(np.float64)
    # the axial normal in the reference's axes: T maps reference points to axial ones, p_axial = R p + t
    normal = _axes(fixed).T @ np.asarray(transform.GetMatrix()).reshape(3, 3).T @ ax[:, 2]
    sums = {}

    def score(image, name, sigma):
        metrics, sums.setdefault(sigma, {})[name] = reference_metrics(
            resample_slab(image, fixed, transform, reference.thickness), target, roi, fixed.GetSpacing(), normal)
        return metrics

    metrics = {name: score(image, name, 0.0) for name, image in images.items()}
    smoothed = smoothed_metrics(images, metrics, smoothing, score) if smoothing else None
    angles = (transform.GetAngleX(), transform.GetAngleY(), transform.GetAngleZ())
    return {'reference': reference.name, 'plane': reference.plane, 'slice_thickness': reference.thickness,
            'registration': {'translation_mm': [round(v, 3) for v in transform.GetTranslation()],
                             'rotation_deg': [round(math.degrees(v), 3) for v in angles],
                             'centre_mm': [round(float(v), 3) for v in centre], 'metric': metric, 'stop': stop},
            'roi': {'size_mm': [roi_mm, roi_mm, None], 'centre_mm': [round(float(v), 3) for v in centre],
                    'voxels': int(roi.sum()), 'normal_in_plane': round(float(np.linalg.norm(normal[:2])), 4)},
            'metrics': metrics,
            **({'intervals': difference_intervals(sums, np.flatnonzero(roi.any(axis=(1, 2))))} if 'cubic' in images
               else {}),
            **({'smoothing': smoothed} if smoothing else {})}


def smoothed_metrics(images, metrics, sigmas, score):
    """Every candidate scored again after a 3-D Gaussian blur of each sigma (mm, SimpleITK's recursive Gaussian in
    physical units, on the candidate's own grid), and its best over the sigmas and no blur.

    A noisy, 3-mm-thick, imperfectly registered reference rewards smoothing: a blurred cubic interpolation scores
    above cubic in Pearson and the z-derivative correlation. A candidate ahead of cubic at their best blurs is ahead
    by more than smoothing.

    Args:
        images (dict): name -> sitk.Image, the candidates in patient coordinates.
        metrics (dict): name -> :func:`reference_metrics` without blur.
        sigmas (sequence[float]): Positive sigmas, mm.
        score (callable): (sitk.Image, name, sigma) -> :func:`reference_metrics`'s metrics on the reference.

    Returns:
        dict: ``sigmas_mm``; ``metrics`` {sigma: {name: metrics}}; ``best`` {name: {metric: [value, sigma]}} (the
        highest value of each of :data:`METRICS`, sigma 0 meaning no blur).
    """
    sigmas = [float(sigma) for sigma in sigmas]
    scored = {0.0: metrics}
    for sigma in sigmas:
        scored[sigma] = {name: score(sitk.SmoothingRecursiveGaussian(image, sigma), name, sigma)
                         for name, image in images.items()}
    best = {name: {m: list(max(((scored[sigma][name][m], sigma) for sigma in scored), key=lambda pair: pair[0]))
                   for m in METRICS} for name in images}
    return {'sigmas_mm': sigmas, 'metrics': {str(sigma): scored[sigma] for sigma in sigmas}, 'best': best}


def external_candidate(path):
    """Another tool's output for the axial series (run on :func:`export_axial`'s file, so in its intensity scale), as a
    float32 SimpleITK image in patient coordinates clipped to [0, 1] like every candidate; VolumeInputError naming
    the file if it cannot be read."""
    volume = read_volume(path)
    return image_on(np.clip(volume.array, 0, 1), tuple(map(float, volume.spacing)), tuple(map(float, volume.origin)),
                    tuple(map(float, volume.direction.ravel())))


def export_axial(axial_folder, path):
    """Write the axial series of ``axial_folder`` as the candidates see it (normalised to [0, 1], float32, its
    geometry) to a volume file ``path``: the input of another through-plane tool (:func:`external_candidate`)."""
    axial = read_stack(axial_folder, ('axial', ))
    sitk.WriteImage(axial.image, path)
    return axial


def evaluate_references(axial_folder, reference_folders, upscaler=None, config=None, scale=2, name='model',
                        views=('sagittal', 'coronal'), force=False, roi_mm=ROI_MM, roi_centre=None, desc='',
                        external=None, data_consistency=True, smoothing=()):
    """Read the series, make the candidates (linear, cubic and, with ``upscaler``, ``name``) and evaluate them
    against every reference (:func:`evaluate_reference`).

    Args:
        upscaler (Upscaler | None): An upscale-1 through-plane generator; None: interpolation only, at ``scale``.
        config (ThroughPlaneConfig | None): Its slice profile, which gives the scale; the axial series' geometry
            must fit it unless ``force`` (:func:`mrsr_plugin.apps.through_plane.check_acquisition`).
        external (dict | None): name -> volume file: other tools' outputs (:func:`external_candidate`), scored as
            candidates too.
        data_consistency (bool): The model's output corrected to reproduce the acquired slices, as mrsr-infer does
            by default.
        smoothing (sequence[float]): Gaussian sigmas (mm): every candidate also scored blurred, and its best
            (:func:`smoothed_metrics`).

    Returns:
        dict: ``axial`` (series, acquisition), ``scale``, ``candidates``, ``model`` (the model's data-consistency
        measures and any geometry warning; None without one), ``references`` (one dict each).

    Raises:
        MRSRUserError: One line naming the folder or file: a missing or unusable series, a reference of another
            FrameOfReferenceUID, a slice geometry the model was not trained for (without ``force``).
    """
    axial = read_stack(axial_folder, ('axial', ))
    references = [read_stack(folder, ('sagittal', 'coronal')) for folder in reference_folders]
    for reference in references:
        if reference.frame_of_reference != axial.frame_of_reference:
            raise DicomInputError(reference.path, f'FrameOfReferenceUID {reference.frame_of_reference or "(none)"} '
                                  f'is not the axial series\' {axial.frame_of_reference or "(none)"}: not the same '
                                  'patient coordinates, so no reference for it')
    acquisition = dicom_acquisition(axial.headers)
    volume = sitk.GetArrayFromImage(axial.image)
    candidates, model = {mode: interpolate_slices(volume, scale, mode) for mode in ('linear', 'cubic')}, None
    if upscaler is not None:
        try:
            warning = check_acquisition(acquisition, config, force)
        except ValueError as err:
            raise DicomInputError(axial.path, str(err)) from err
        candidates[name], model = super_resolve_consistently(upscaler, volume, config, data_consistency, desc, views)
        model['geometry_warning'] = warning
    candidates = {key: np.clip(value, 0, 1) for key, value in candidates.items()}
    candidates.update({key: external_candidate(path) for key, path in (external or {}).items()})
    return {'axial': {'series': axial.name, 'acquisition': str(acquisition), 'size': list(axial.image.GetSize())},
            'scale': scale, 'candidates': list(candidates), 'model': model,
            'references': [evaluate_reference(axial, ref, candidates, scale, roi_mm, roi_centre, smoothing)
                           for ref in references]}


def format_reference_table(result):
    """Markdown: one row per candidate and, for each that is not an interpolation (the model, other tools' outputs),
    its difference to cubic, with its bootstrap interval in Pearson and the z-derivative correlation; columns
    :data:`METRICS`. With smoothing: each candidate's best over the blurs (the sigma in mm in brackets), and the
    differences of those bests to cubic's."""
    head = ['candidate', 'Pearson', 'NMI', 'PSNR (dB)', 'SSIM', 'z-derivative r']
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]

    def row(name, cell):  # cell(metric, its digits) -> text
        lines.append(f'| {name} | ' + ' | '.join(cell(m, 3 if m == 'psnr' else 4) for m in METRICS) + ' |')

    def difference(deltas, name, key, m, d):  # a difference to cubic, with the interval of result['intervals'][key]
        interval = result.get('intervals', {}).get(key, {}).get(name, {}).get(m)
        text = f'{deltas[name][m]:+.{d}f}'
        return text if interval is None else f'{text} [{interval["low"]:+.{d}f}, {interval["high"]:+.{d}f}]'

    metrics = result['metrics']
    others = [c for c in metrics if c not in ('linear', 'cubic')]
    deltas = {o: {m: metrics[o][m] - metrics['cubic'][m] for m in METRICS} for o in others}
    for candidate, values in metrics.items():
        row(candidate, lambda m, d: f'{values[m]:.{d}f}')
    for other in others:
        row(f'{other} - cubic', lambda m, d: difference(deltas, other, 'to_cubic', m, d))
    if 'smoothing' in result:
        best = result['smoothing']['best']
        best_deltas = {o: {m: best[o][m][0] - best['cubic'][m][0] for m in METRICS} for o in others}
        for candidate, values in best.items():
            row(f'{candidate}, best blur', lambda m, d: f'{values[m][0]:.{d}f} ({values[m][1]:g})')
        for other in others:
            row(f'{other} - cubic, best blurs', lambda m, d: difference(best_deltas, other, 'best_to_cubic', m, d))
    if 'intervals' in result:
        lines.append(f'\n[low, high]: {100 * result["intervals"]["level"]:g} % bootstrap interval over the '
                     f'{result["intervals"]["slices"]} reference slices in the region (paired).')
    return '\n'.join(lines)
