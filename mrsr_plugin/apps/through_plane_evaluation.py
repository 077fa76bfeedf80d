"""A through-plane generator against interpolation along z on real thick-slice volumes, per patient.

    python scripts/evaluate_through_plane.py -opt options/through_plane/train_mrdab_z2.yml \\
        -w experiments/through_plane_MRDAB_GAN_z2/models/net_g_latest.pth \\
        --dicom datasets/prostate3t/Prostate3T-03-0005 --json experiments/through_plane_MRDAB_GAN_z2/test.json

Each ``--dicom`` folder is one patient (named by the folder): its axial MR series with the most slices, read with
:func:`mrsr_plugin.mrio.dicom.load_series` and normalised as ``scripts/lmdb_prepare.py`` does (0.5 / 99.5
percentile window of the volume, clipped to [0, 1]). Its true slices are the reference: contiguous slabs one
``target_spacing`` apart (3 mm in the embedded series). The setting is the option file's training
``degradation`` applied along z (:func:`mrsr_plugin.data.slice_profile.thick_slices`, the profile in units of the
series' slices): for ``train_mrdab_z2.yml`` every other true slice (a 3-mm rect profile over 3-mm slices is the
slice); for ``train_mrdab_z2_thick.yml`` slices twice as thick, each 1/4, 1/2, 1/4 of the true slices it covers,
centred on every other one (borders mirrored). Those thick slices go back to the true slices' grid (the kept-slice
grid, s (n - 1) + 1 slices) by linear, cubic (PyTorch's, Keys a = -0.75: the network's input) and cubic-spline
(scipy, not-a-knot) interpolation along z and by the network (:func:`super_resolve_through_plane`, the mean of
the sagittal and coronal views); every output is clipped to [0, 1], the reference's range.

Slices compared: those the input does not hold. With a one-tap profile (thin slices) the kept slices are true
slices passed through, so only the s - 1 of every s between them count; with a thicker profile no output slice is
an input slice, and all output slices count. Per slice: MR PSNR and MR SSIM of the axial slice
(:mod:`mrsr_plugin.metrics.mr_metric`, data range 1, no border: nothing is interpolated in-plane); a patient's value
is the mean over its slices, the mean row the mean over patients (:func:`mrsr_plugin.apps.evaluation.summarise`).
"""

import numpy as np

from mrsr_plugin.errors import MRSRUserError
from mrsr_plugin.data.slice_profile import interpolate_slices, output_length, thick_slices
from mrsr_plugin.apps.through_plane import super_resolve_through_plane

INTERPOLATORS = ('linear', 'cubic', 'cubic spline')
REFERENCE = 'cubic'


def patient_stack(folder, crop=None):
    """The axial MR series of ``folder`` with the most slices, normalised as lmdb_prepare does
    (:func:`~mrsr_plugin.apps.through_plane_reference.read_stack`), its image cropped in-plane to the central
    ``crop`` x ``crop`` pixels (geometry kept) where given."""
    from mrsr_plugin.apps.through_plane_reference import read_stack
    stack = read_stack(folder, ('axial', ))
    if crop:
        x, y = stack.image.GetSize()[:2]
        if not 0 < crop <= min(x, y):
            raise MRSRUserError(f'--crop {crop}: {stack.path} has {x} x {y} pixels')
        stack.image = stack.image[(x - crop) // 2:(x - crop) // 2 + crop, (y - crop) // 2:(y - crop) // 2 + crop, :]
    return stack


def load_patient(folder, crop=None):
    """:func:`patient_stack`'s volume: (z, y, x) float32."""
    import SimpleITK as sitk
    return sitk.GetArrayFromImage(patient_stack(folder, crop).image)


def thick_image(image, config):
    """The simulated acquisition of a true-slice volume ``image`` as an image in its patient coordinates: thick
    slice k (:func:`thick_slices`) lies on true slice k s, one s-times-larger z step apart; the input that another
    through-plane tool sees (``--export-thick``)."""
    import SimpleITK as sitk

    from mrsr_plugin.apps.through_plane_reference import image_on
    spacing = image.GetSpacing()
    return image_on(thick_slices(sitk.GetArrayFromImage(image), config), (*spacing[:2], spacing[2] * config.scale),
                    image.GetOrigin(), image.GetDirection())


def external_on_true_slices(candidate, image, thickness):
    """Another tool's output ``candidate`` (SimpleITK image in the same patient coordinates) on the true slices of
    ``image``, averaged over their ``thickness`` (mm) as a true slice integrates
    (:func:`~mrsr_plugin.apps.through_plane_reference.resample_slab`) -> ((z, y, x) values, (z,) whether each slice's
    every slab lies inside the candidate's grid)."""
    import SimpleITK as sitk

    from mrsr_plugin.apps.through_plane_reference import coverage, resample_slab
    identity = sitk.Transform(3, sitk.sitkIdentity)
    covered = coverage(candidate, image, identity, thickness).all(axis=(1, 2))
    return resample_slab(candidate, image, identity, thickness), covered


def cubic_spline(thick, scale):
    """Not-a-knot cubic spline through the thick slices along z onto the kept-slice grid (scipy)."""
    from scipy.interpolate import make_interp_spline
    positions = np.arange(output_length(len(thick), scale)) / scale
    return make_interp_spline(np.arange(len(thick)), thick, k=min(3, len(thick) - 1), axis=0)(positions)


def compared_slices(config, num_outputs):
    """Indices of the output slices that count (module docstring)."""
    if len(config.kernel()) == 1:
        return [k for k in range(num_outputs) if k % config.scale]
    return list(range(num_outputs))


def evaluate_volume(volume, patient, config, upscaler, name, views, external=None):
    """Rows (``model``, ``key``, ``patient``, ``mr_psnr``, ``mr_ssim``) of every method on one patient's volume;
    ``external``: {name: :func:`external_on_true_slices`' output}, scored on the same slices (those every one of them
    covers)."""
    from mrsr_plugin.metrics.mr_metric import calculate_mr_psnr, calculate_mr_ssim
    s = config.scale
    thick = thick_slices(volume, config)
    outputs = {'linear': interpolate_slices(thick, s, 'linear'), 'cubic': interpolate_slices(thick, s, 'cubic'),
               'cubic spline': cubic_spline(thick, s)}
    if upscaler is not None:
        outputs[name] = super_resolve_through_plane(upscaler, thick, s, views)
    length = len(outputs['cubic'])
    compared = compared_slices(config, length)
    for other, (values, covered) in (external or {}).items():
        outputs[other] = values[:length]
        compared = [k for k in compared if covered[k]]
    if not compared:
        raise MRSRUserError(f'{patient}: no compared slice is covered by every --candidate')
    rows = []
    for model, out in outputs.items():
        out = np.clip(out, 0, 1)
        for k in compared:
            rows.append({'model': model, 'key': f'{patient}_z{k:03d}', 'patient': patient,
                         'mr_psnr': calculate_mr_psnr(out[k], volume[k], data_range=1.0),
                         'mr_ssim': calculate_mr_ssim(out[k], volume[k], data_range=1.0)})
    return rows


def format_table(summary, model, others=()):
    """Markdown: per patient and mean, MR PSNR and SSIM of each interpolation, the model and ``others`` (other tools'
    outputs), and the difference of each of these to cubic."""
    scored = [model, *others] if model in summary else list(others)
    methods = [*INTERPOLATORS, *scored]
    head = ['patient', 'slices']
    for metric in ('MR PSNR', 'MR SSIM'):
        head += [f'{m} {metric}' for m in methods] + [f'{m} - {REFERENCE}' for m in scored]
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for patient, ref in summary[REFERENCE].items():
        cells = [patient, str(ref['slices'])]
        for metric, digits in (('mr_psnr', 3), ('mr_ssim', 4)):
            cells += [f'{summary[m][patient][metric]:.{digits}f}' for m in methods]
            cells += [f'{summary[m][patient][metric] - ref[metric]:+.{digits}f}' for m in scored]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)
