"""Through-plane super-resolution against a real reference series (issue 21, item 4): a smooth phantom with known
geometry, a tilted thick-slice axial stack and a sagittal reference of the same phantom moved by a known translation,
written as DICOM series."""
import json

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from mrsr_plugin.apps.infer.core import Upscaler
from mrsr_plugin.apps.through_plane import volume_geometry
from mrsr_plugin.apps.through_plane_reference import (difference_intervals, evaluate_reference, evaluate_references,
                                                      format_reference_table, pearson_of_sums, read_stack, slice_sums)
from mrsr_plugin.archs.bicubic_arch import Bicubic
from mrsr_plugin.cli.evaluate_through_plane import main
from mrsr_plugin.data.slice_profile import ThroughPlaneConfig, interpolate_slices
from mrsr_plugin.errors import MRSRUserError
from mrsr_plugin.mrio.intensity import normalise

TILT = np.radians(23)  # the axial stack of prostatex_0218 is tilted about x like this
AXIAL = (1, 0, 0, 0, np.cos(TILT), -np.sin(TILT))
SAGITTAL = (0, 1, 0, 0, 0, -1)
SHIFT = np.array([0.5, 3.0, -1.5])  # mm the patient moved between the axial and the sagittal series
FRAME = generate_uid()
_rng = np.random.default_rng(0)
BLOBS = (_rng.uniform(-16, 16, (16, 3)), _rng.uniform(2.5, 5, 16), _rng.choice([-1, 1], 16) * _rng.uniform(0.5, 1, 16))


def phantom(points):
    """A smooth 3-D phantom at (..., 3) patient coordinates (mm): Gaussian blobs 2.5-5 mm wide on a constant."""
    centres, sigmas, amplitudes = BLOBS
    d2 = ((points[..., None, :] - centres)**2).sum(-1)
    return 2 + (amplitudes * np.exp(-d2 / (2 * sigmas**2))).sum(-1)


def voxel_centres(orientation, size, spacing, step, origin):
    """(n, rows, columns, 3) patient coordinates of a stack's voxel centres."""
    row, column = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    k, i, j = np.indices((size[2], size[1], size[0]))
    return origin + (j * spacing)[..., None] * row + (i * spacing)[..., None] * column + (
        k * step)[..., None] * np.cross(row, column)


def write_stack(folder, orientation, size, spacing, step, description, shift=0.0, frame=FRAME, thickness=3.0):
    """A series of 3-mm slabs of the phantom moved by ``shift`` (reference(p) = phantom(p + shift)), centred on the
    origin: ``size`` (columns, rows, slices), ``spacing`` mm pixels, slices ``step`` mm apart. Returns the folder."""
    template = pydicom.dcmread(get_testdata_file('MR_small.dcm'))
    normal = np.cross(orientation[:3], orientation[3:])
    origin = -((size[0] - 1) * spacing * np.asarray(orientation[:3]) + (size[1] - 1) * spacing *
               np.asarray(orientation[3:]) + (size[2] - 1) * step * normal) / 2
    centres = voxel_centres(orientation, size, spacing, step, origin) + shift
    offsets = ((np.arange(6) + 0.5) / 6 - 0.5) * thickness
    slabs = np.mean([phantom(centres + t * normal) for t in offsets], axis=0)
    folder.mkdir()
    series_uid = generate_uid()
    for k, slab in enumerate(slabs):
        ds = template.copy()
        ds.PatientID, ds.PatientName, ds.SeriesDescription = 'SECRET-ID', 'Secret^Name', description
        ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.FrameOfReferenceUID = series_uid, generate_uid(), frame
        ds.ImageOrientationPatient = [float(v) for v in orientation]
        ds.ImagePositionPatient = [float(v) for v in origin + k * step * normal]
        ds.PixelSpacing, ds.SliceThickness, ds.InstanceNumber = [spacing, spacing], thickness, k + 1
        ds.Rows, ds.Columns = size[1], size[0]
        ds.PixelData = np.round(500 * slab).astype(np.int16).tobytes()
        ds.save_as(folder / f'{k:03d}.dcm')
    return folder


@pytest.fixture(scope='module')
def exam(tmp_path_factory):
    """An axial stack (40x40 pixels of 1.25 mm, 12 slabs of 3 mm every 3.6 mm, tilted 23 degrees about x), a
    sagittal reference (56x56 pixels of 1 mm, 13 slabs of 3 mm every 3.6 mm) of the phantom moved by SHIFT, and the
    same reference in another FrameOfReferenceUID."""
    root = tmp_path_factory.mktemp('exam')
    return {'axial': write_stack(root / 'axial', AXIAL, (40, 40, 12), 1.25, 3.6, 't2 tra'),
            'sagittal': write_stack(root / 'sagittal', SAGITTAL, (56, 56, 13), 1.0, 3.6, 't2 sag', SHIFT),
            'other': write_stack(root / 'other', SAGITTAL, (56, 56, 13), 1.0, 3.6, 't2 sag', SHIFT, generate_uid())}


def test_registration_recovers_the_motion_and_the_truth_beats_linear(exam):
    """The rigid registration finds the known translation within 0.5 mm (no rotation); the phantom itself on the
    kept-slice grid scores above linear interpolation of the thick slices in Pearson and z-derivative correlation."""
    axial, sagittal = read_stack(exam['axial'], ('axial', )), read_stack(exam['sagittal'], ('sagittal', ))
    assert sagittal.name == 'sagittal t2 sag' and sagittal.thickness == 3.0
    volume = sitk.GetArrayFromImage(axial.image)
    spacing, origin, _, size = volume_geometry(axial.image.GetSpacing(), axial.image.GetOrigin(),
                                               axial.image.GetDirection(), axial.image.GetSize(), 2)
    truth = phantom(voxel_centres(AXIAL, size, spacing[0], spacing[2], np.asarray(origin)))
    candidates = {'linear': interpolate_slices(volume, 2, 'linear'), 'cubic': interpolate_slices(volume, 2),
                  'truth': normalise(truth, 'percentile', (0.5, 99.5))[0]}  # the series' window, clipped
    result = evaluate_reference(axial, sagittal, candidates, 2, roi_mm=40)
    registration = result['registration']
    assert np.abs(np.subtract(registration['translation_mm'], SHIFT)).max() < 0.5, registration
    assert np.abs(registration['rotation_deg']).max() < 1, registration
    assert result['roi']['voxels'] > 5000 and result['roi']['normal_in_plane'] == pytest.approx(1, abs=1e-3)
    metrics = result['metrics']
    assert metrics['truth']['pearson'] > metrics['linear']['pearson'] > 0.9, metrics
    assert metrics['truth']['z_derivative_r'] > metrics['linear']['z_derivative_r'] + 0.02, metrics
    assert all(1 < m['nmi'] < 2 and 0 < m['ssim'] <= 1 and m['psnr'] > 20 for m in metrics.values()), metrics
    table = format_reference_table(result).splitlines()
    assert table[5].startswith('| truth - cubic | +') and len(table) == 8 and 'bootstrap interval' in table[-1]
    # the truth's lead over cubic in z detail is far outside the slice-to-slice spread; each interval holds its estimate
    intervals = result['intervals']
    assert 0 < intervals['slices'] <= sagittal.image.GetSize()[2] and intervals['resamples'] == 2000
    for name in ('linear', 'truth'):
        for metric in ('pearson', 'z_derivative_r'):
            entry = intervals['to_cubic'][name][metric]
            assert entry['diff'] == pytest.approx(metrics[name][metric] - metrics['cubic'][metric], abs=1e-9)
            assert entry['low'] <= entry['diff'] <= entry['high'], entry
    assert intervals['to_cubic']['truth']['z_derivative_r']['low'] > 0, intervals
    assert 'best_to_cubic' not in intervals
    assert f'[{intervals["to_cubic"]["truth"]["pearson"]["low"]:+.4f}, ' in table[5]


def test_pearson_from_slice_sums_is_the_pooled_correlation():
    """The sufficient statistics of the bootstrap give np.corrcoef of the pooled voxels exactly, for any multiset
    of slices (a slice drawn twice counts twice); masked-out voxels do not count."""
    rng = np.random.default_rng(3)
    a = rng.normal(size=(5, 7, 6))
    b = a + rng.normal(size=a.shape)
    mask = rng.random(a.shape) < 0.7
    sums = slice_sums(a, b, mask)
    picks = [0, 2, 2, 4]
    pooled_a = np.concatenate([a[k][mask[k]] for k in picks])
    pooled_b = np.concatenate([b[k][mask[k]] for k in picks])
    assert pearson_of_sums(sums[picks].sum(0)) == pytest.approx(np.corrcoef(pooled_a, pooled_b)[0, 1], abs=1e-12)
    assert pearson_of_sums(3 * sums.sum(0)) == pytest.approx(np.corrcoef(a[mask], b[mask])[0, 1], abs=1e-12)


def test_a_candidate_equal_to_cubic_has_a_zero_interval():
    """Paired resamples: a copy of cubic differs from it by exactly 0 in every resample, blurred or not; the best
    blur is chosen per resample, so its difference is at least 0 where a candidate is cubic itself blurred."""
    rng = np.random.default_rng(4)
    ref = rng.normal(size=(6, 8, 8))
    cubic = ref + rng.normal(size=ref.shape)
    blurred = cubic + 0.5 * rng.normal(size=ref.shape)
    mask = np.ones(ref.shape, bool)
    sums = {sigma: {name: {m: slice_sums(v, ref, mask) for m in ('pearson', 'z_derivative_r')}
                    for name, v in (('cubic', cubic), ('copy', cubic), ('noisier', blurred))}
            for sigma in (0.0, 1.0)}
    out = difference_intervals(sums, np.arange(6), resamples=200)
    assert out['to_cubic']['copy']['pearson'] == {'diff': 0.0, 'low': 0.0, 'high': 0.0}
    assert out['best_to_cubic']['copy']['z_derivative_r'] == {'diff': 0.0, 'low': 0.0, 'high': 0.0}
    noisier = out['to_cubic']['noisier']['pearson']
    assert noisier['high'] < 0 and out['slices'] == 6 and out['resamples'] == 200


def test_identity_model_is_cubic_and_the_geometry_check_applies(exam):
    """An identity network on the cubic input, with data consistency of a thin profile, is cubic interpolation; its
    slice geometry (3 mm every 6 mm) is not the series' (3 mm every 3.6 mm): refused in one line naming the file,
    --force runs it with the warning."""
    upscaler = Upscaler(Bicubic(num_in_ch=1, upscale=1), torch.device('cpu'), reparameterize='none')
    config = ThroughPlaneConfig(slice_thickness=3, slice_gap=3, target_spacing=3)
    with pytest.raises(MRSRUserError, match=r'axial/000\.dcm: slice geometry mismatch: input: 3 mm slices every '
                       r'3\.6 mm, model: 3 mm slices every 6 mm') as info:
        evaluate_references(exam['axial'], [exam['sagittal']], upscaler, config)
    assert '\n' not in str(info.value)
    result = evaluate_references(exam['axial'], [exam['sagittal']], upscaler, config, name='net', force=True)
    assert 'mismatch, run with --force' in result['model']['geometry_warning']
    assert result['model']['data_consistency_nrmse'] < 1e-5 and result['candidates'] == ['linear', 'cubic', 'net']
    metrics = result['references'][0]['metrics']
    assert all(metrics['net'][m] == pytest.approx(metrics['cubic'][m], rel=1e-4) for m in ('pearson', 'ssim'))


def test_command_line_json_and_one_line_errors(exam, tmp_path, capsys):
    """Without -w: linear and cubic at --scale, a table per reference and --json without patient identifiers; a
    reference of another FrameOfReferenceUID is refused in one line naming its file."""
    out = tmp_path / 'out.json'
    result = main(['--dicom', str(exam['axial']), '--reference', str(exam['sagittal']), '--roi-mm', '40',
                   '--roi-center', '0', '0', '0', '--json', str(out)])
    printed = capsys.readouterr().out
    assert '| cubic |' in printed and 'translation' in printed and result['scale'] == 2
    text = out.read_text()
    assert 'SECRET' not in text + printed and 'Secret' not in text + printed
    saved = json.loads(text)
    (reference, ) = saved['references']
    assert reference['reference'] == 'sagittal t2 sag' and reference['roi']['centre_mm'] == [0, 0, 0]
    assert set(reference['metrics']) == {'linear', 'cubic'} and reference['roi']['voxels'] > 0

    with pytest.raises(SystemExit) as exit_info:
        main(['--dicom', str(exam['axial']), '--reference', str(exam['sagittal']), str(exam['other'])])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f'evaluate_through_plane: error: {exam["other"] / "000.dcm"}: FrameOfReferenceUID ')
    assert '\n' not in err and 'not the same patient coordinates' in err
    with pytest.raises(SystemExit):
        main(['--dicom', str(exam['axial']), '--reference', str(exam['axial'])])
    assert capsys.readouterr().err.strip().endswith(f'{exam["axial"]}: no sagittal or coronal MR series')


def test_another_tools_output_is_scored_as_a_candidate(exam, tmp_path, capsys):
    """--export-axial writes the normalised axial series; a volume made from it comes back with --candidate and is
    scored on the same voxels (the axial stack itself, linear between its slices, scores as linear does); an
    unreadable candidate stops in one line naming the file."""
    exported = tmp_path / 'axial.nii.gz'
    assert main(['--dicom', str(exam['axial']), '--reference', str(exam['sagittal']), '--export-axial',
                 str(exported)]) is None
    assert exported.exists() and 'normalised to [0, 1]' in capsys.readouterr().out
    result = main(['--dicom', str(exam['axial']), '--reference', str(exam['sagittal']), '--roi-mm', '40',
                   '--roi-center', '0', '0', '0', '--candidate', f'tool={exported}'])
    assert '| tool - cubic |' in capsys.readouterr().out
    metrics = result['references'][0]['metrics']
    assert result['candidates'] == ['linear', 'cubic', 'tool']
    assert metrics['tool']['pearson'] == pytest.approx(metrics['linear']['pearson'], abs=0.01)
    broken = tmp_path / 'broken.nii.gz'
    broken.write_bytes(b'not a volume')
    with pytest.raises(SystemExit):
        main(['--dicom', str(exam['axial']), '--reference', str(exam['sagittal']), '--candidate', f'tool={broken}'])
    err = capsys.readouterr().err.strip()
    assert '\n' not in err and str(broken) in err


def test_smoothing_reports_each_candidates_best_blur(exam):
    """--smoothing: every candidate scored again blurred (3-D Gaussian, mm); its best over the blurs and no blur is
    the maximum of what was scored, per metric, with its sigma; the phantom itself stays ahead of cubic at their best
    blurs (it has z detail that no blur of cubic gives); the table adds the bests and their differences."""
    axial, sagittal = read_stack(exam['axial'], ('axial', )), read_stack(exam['sagittal'], ('sagittal', ))
    volume = sitk.GetArrayFromImage(axial.image)
    spacing, origin, _, size = volume_geometry(axial.image.GetSpacing(), axial.image.GetOrigin(),
                                               axial.image.GetDirection(), axial.image.GetSize(), 2)
    truth = phantom(voxel_centres(AXIAL, size, spacing[0], spacing[2], np.asarray(origin)))
    candidates = {'cubic': interpolate_slices(volume, 2), 'truth': normalise(truth, 'percentile', (0.5, 99.5))[0]}
    result = evaluate_reference(axial, sagittal, candidates, 2, roi_mm=40, smoothing=(1.0, 2.5))
    smoothing = result['smoothing']
    assert smoothing['sigmas_mm'] == [1.0, 2.5] and set(smoothing['metrics']) == {'1.0', '2.5'}
    for name in candidates:
        for metric in ('pearson', 'nmi', 'psnr', 'ssim', 'z_derivative_r'):
            scored = {0.0: result['metrics'][name][metric],
                      **{float(s): smoothing['metrics'][s][name][metric] for s in smoothing['metrics']}}
            value, sigma = smoothing['best'][name][metric]
            assert value == max(scored.values()) and scored[sigma] == value
        assert smoothing['metrics']['2.5'][name]['pearson'] != result['metrics'][name]['pearson']
    best = smoothing['best']
    assert best['truth']['z_derivative_r'][0] > best['cubic']['z_derivative_r'][0]
    lines = format_reference_table(result).splitlines()
    assert lines[-5].startswith('| cubic, best blur | ') and lines[-3].startswith('| truth - cubic, best blurs | +')
    interval = result['intervals']['best_to_cubic']['truth']['z_derivative_r']
    assert interval['low'] <= interval['diff'] <= interval['high']
    assert interval['diff'] == pytest.approx(best['truth']['z_derivative_r'][0] - best['cubic']['z_derivative_r'][0])


def test_smoothing_flag_needs_positive_sigmas_and_a_reference(exam, capsys):
    axial, sagittal = str(exam['axial']), str(exam['sagittal'])
    for args in (['--dicom', axial, '--reference', sagittal, '--smoothing', '1', '0'],
                 ['--dicom', axial, '-w', 'mrdab_z2_prostate3t_demo', '--smoothing', '1']):
        with pytest.raises(SystemExit):
            main(args)
        assert '--smoothing takes positive sigmas (mm) and goes with --reference' in capsys.readouterr().err
