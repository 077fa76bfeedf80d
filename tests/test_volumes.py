"""Volume files (NIfTI, MetaImage, NRRD): read and written with their geometry, through lmdb_prepare and mrsr-infer,
bad files skipped in one line; and the done-means run: a NIfTI of the embedded prostate patient through
lmdb_prepare, a tiny BasicSR training and mrsr-infer, back as NIfTI with its geometry."""
import itertools
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import PROSTATE_T2, run_infer, run_python, tiny_options, write_options

import mrsr_plugin.train
from mrsr_plugin.mrio.lmdb import read_lmdb
from mrsr_plugin.errors import MRSRUserError
from mrsr_plugin.apps import prepare
from mrsr_plugin.cli import prepare as prepare_cli
from mrsr_plugin.mrio.volume import read_volume, refined_geometry, write_volume
from mrsr_plugin.apps.infer.run import REPORT_NAME
from mrsr_plugin.apps.tinyrun import use_prepared_lmdb

FORMATS = ('nii.gz', 'nii', 'mha', 'mhd', 'nrrd', 'nhdr')
SPACING, ORIGIN = (0.7, 0.55, 3.3), (12.3, -45.6, 78.9)  # anisotropic; (x, y, z)
DIRECTION = sitk.VersorTransform((1, 2, 3), 0.4).GetMatrix()  # an oblique rotation
BICUBIC = '{"type": "Bicubic", "num_in_ch": 1, "upscale": 2}'


def make_image(array, spacing=SPACING, origin=ORIGIN, direction=DIRECTION):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    return image


def anatomy(dtype=np.int16, shape=(3, 10, 12), seed=0):
    """A smooth blob plus noise, in ``dtype``'s range (0-1000 for integers, 0-1 for reals)."""
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing='ij')
    values = np.exp(-(x**2 + y**2) * 2) + 0.05 * np.random.default_rng(seed).random(shape)
    return (values * 1000).astype(dtype) if np.issubdtype(dtype, np.integer) else values.astype(dtype)


def outer_corners(image):
    """World coordinates (8, 3) of the outer edges of the corner voxels: continuous indices -0.5 and n - 0.5."""
    return np.array([image.TransformContinuousIndexToPhysicalPoint([float(v) for v in corner])
                     for corner in itertools.product(*[(-0.5, n - 0.5) for n in image.GetSize()])])


@pytest.fixture(scope='module')
def bicubic_weights(tmp_path_factory):
    """A checkpoint of the parameter-free Bicubic network: mrsr-infer without training."""
    path = tmp_path_factory.mktemp('weights') / 'bicubic.pth'
    torch.save({'params': {}}, path)
    return path


def test_geometry_and_pixel_type_round_trip_in_every_format(tmp_path, bicubic_weights):
    """For each format (int16) and for float32 and uint8 NIfTI: mrsr-infer x2 keeps the outer edges of the corner
    voxels to 1e-4 mm (oblique direction, non-zero origin, anisotropic spacing, read back by SimpleITK), doubles
    rows and columns, keeps the pixel type, and its intensities stay the source's (block means close to it)."""
    cases = {f'int16.{ext}': anatomy(np.int16) for ext in FORMATS}
    cases.update({'float32.nii.gz': anatomy(np.float32), 'uint8.nii.gz': (anatomy(np.float32) * 255).astype(np.uint8)})
    (tmp_path / 'in').mkdir()
    for name, array in cases.items():
        sitk.WriteImage(make_image(array), str(tmp_path / 'in' / name))
    assert run_infer('-i', tmp_path / 'in', '-o', tmp_path / 'out', '-w', bicubic_weights, '--arch-args', BICUBIC,
                     '-q') == 0
    report = json.loads((tmp_path / 'out' / REPORT_NAME).read_text())
    assert report['skipped'] == [] and len(report['produced']) == len(cases)
    for name, array in cases.items():
        stem, ext = name.split('.', 1)
        source, output = sitk.ReadImage(str(tmp_path / 'in' / name)), sitk.ReadImage(
            str(tmp_path / 'out' / f'{stem}_SRx2.{ext}'))
        assert output.GetSize() == (24, 20, 3), name
        assert output.GetPixelID() == source.GetPixelID(), name
        assert np.abs(outer_corners(output) - outer_corners(source)).max() < 1e-4, name
        assert np.allclose(output.GetSpacing(), np.array(source.GetSpacing()) / (2, 2, 1), atol=1e-6), name
        blocks = sitk.GetArrayFromImage(output).astype(float).reshape(3, 10, 2, 12, 2).mean((2, 4))
        assert np.abs(blocks - array).mean() < 0.05 * np.ptp(array), name


def test_refined_geometry_and_write_volume_keep_edges_and_clip_integers(tmp_path):
    """The public API the through-plane mode builds on: refined_geometry keeps the outer edges for any factors
    (here along z), write_volume rounds and clips to the source's integer type and copies its metadata."""
    sitk.WriteImage(make_image(anatomy(np.int16)), str(tmp_path / 'src.nrrd'))
    source = read_volume(str(tmp_path / 'src.nrrd'))
    spacing, origin = refined_geometry(source, (1, 1, 3))
    values = np.repeat(source.array, 3, axis=0)
    values[0, 0, :3] = [-1e6, 1e6, 2.6]
    write_volume(str(tmp_path / 'out.nrrd'), values, source, spacing, origin)
    written = sitk.ReadImage(str(tmp_path / 'out.nrrd'))
    assert np.abs(outer_corners(written) - outer_corners(sitk.ReadImage(str(tmp_path / 'src.nrrd')))).max() < 1e-9
    assert sitk.GetArrayFromImage(written)[0, 0, :3].tolist() == [-32768, 32767, 3]
    assert written.GetPixelID() == sitk.sitkInt16 and written.GetMetaData('NRRD_space') == 'left-posterior-superior'
    assert sorted(os.listdir(tmp_path)) == ['out.nrrd', 'src.nrrd']  # no staging folder left


def write_bad_files(folder):
    """One good NIfTI beside files that cannot be used; returns {file name: expected reason fragment}."""
    folder.mkdir()
    good = anatomy(np.int16)
    sitk.WriteImage(make_image(good), str(folder / 'good.nii.gz'))
    sitk.WriteImage(sitk.GetImageFromArray(good[0]), str(folder / 'flat.nii.gz'))
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 2, 3, 4, 5), np.int16)), str(folder / 'five.nii.gz'))
    sitk.WriteImage(sitk.JoinSeries([make_image(good), make_image(good + 500)]), str(folder / 'four.nii.gz'))
    data = (folder / 'good.nii.gz').read_bytes()
    (folder / 'cut.nii.gz').write_bytes(data[:len(data) // 2])
    sitk.WriteImage(make_image(good), str(folder / 'short.mhd'))
    raw = (folder / 'short.raw').read_bytes()
    (folder / 'short.raw').write_bytes(raw[:len(raw) // 2])
    return {'flat.nii.gz': '2-D image (12x10); a volume must be 3-D, or 4-D with channels along its fourth axis',
            'five.nii.gz': '5-D image (5x4x3x2x2); a volume must be 3-D, or 4-D with channels along its fourth axis',
            'four.nii.gz': '2 channels along its fourth axis; choose one with --volume-channel',
            'cut.nii.gz': 'truncated or corrupt gzip data',
            'short.mhd': f'truncated image data ({len(raw) // 2} of {len(raw)} bytes)'}


def test_bad_volume_files_are_skipped_in_one_line_each(tmp_path, bicubic_weights, capfd):
    """Wrong dimensionality, 4-D without a channel, a truncated .nii.gz and an .mhd with a short .raw: mrsr-infer
    and lmdb_prepare skip each with one line (no traceback, nothing printed by ITK) and process the good file; a
    bad file given alone is one error line (after the reason when found only by reading the data), exit status 2;
    --volume-channel picks a 4-D file's channel."""
    expected = write_bad_files(tmp_path / 'in')
    assert run_infer('-i', tmp_path / 'in', '-o', tmp_path / 'out', '-w', bicubic_weights, '--arch-args', BICUBIC) == 1
    out, err = capfd.readouterr()
    lines = [line for line in err.splitlines() if line.strip() and '%|' not in line]  # but the progress bars
    assert lines.pop() == (f'mrsr-infer: {len(expected)} inputs skipped for a fault of their own (reasons in '
                           f'{REPORT_NAME}): exit status 1')
    assert len(lines) == len(expected) and 'Traceback' not in err and 'MetaImage' not in out + err, err
    for name, reason in expected.items():
        assert sum(line.startswith(f'skipped {name}: ') and reason in line for line in lines) == 1, (name, err)
    assert sorted(os.listdir(tmp_path / 'out')) == ['good_SRx2.nii.gz', REPORT_NAME]
    report = json.loads((tmp_path / 'out' / REPORT_NAME).read_text())
    assert {s['path'] for s in report['skipped']} == set(expected)

    assert run_infer('-i', tmp_path / 'in' / 'four.nii.gz', '-o', tmp_path / 'four', '-w', bicubic_weights,
                     '--arch-args', BICUBIC, '--volume-channel', '1', '-q') == 0
    four = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / 'four' / 'four_c1_SRx2.nii.gz')))
    assert four.shape == (3, 20, 24) and abs(four.mean() - (anatomy(np.int16).mean() + 500)) < 20
    capfd.readouterr()
    # found only by reading the data: the file is skipped, and then nothing is left
    assert run_infer('-i', tmp_path / 'in' / 'short.mhd', '-o', tmp_path / 'alone', '-w', bicubic_weights,
                     '--arch-args', BICUBIC, '-q') == 2
    assert capfd.readouterr().err.splitlines() == [
        f'skipped short.mhd: {expected["short.mhd"]}',
        f'mrsr-infer: error: {tmp_path / "in" / "short.mhd"}: none of the 1 series or volumes could be super-resolved; '
        'reasons above']
    assert run_infer('-i', tmp_path / 'in' / 'flat.nii.gz', '-o', tmp_path / 'alone', '-w', bicubic_weights,
                     '--arch-args', BICUBIC) == 2
    flat = tmp_path / 'in' / 'flat.nii.gz'
    assert capfd.readouterr().err == f'mrsr-infer: error: {flat}: {expected["flat.nii.gz"]}\n'

    report = prepare.build(prepare_cli.parse_args([str(tmp_path / 'in'), str(tmp_path / 'lmdb'), '--scales', '2',
                                               '--split-ratio', '1', '0', '0', '--keep-patient-ids', '--quiet']))
    out, err = capfd.readouterr()
    assert 'Traceback' not in err and 'MetaImage' not in out + err
    assert [(i['path'], i['source'], i['slices']) for i in report['included']] == [('good.nii.gz', 'nii.gz', 3)]
    assert {s['path']: s['reason'] for s in report['skipped']}.keys() == expected.keys()
    assert report['counts'] == {'train': 3, 'val': 0, 'test': 0}


def test_prepare_takes_the_patient_from_a_csv_and_the_channel_by_option(tmp_path):
    """--patients-csv groups two files into one patient (one case, two series) and leaves out an unlisted file;
    --volume-channel 1 reads a 4-D file's second channel; report paths are pseudonymised; a CSV without the
    columns is one line."""
    (tmp_path / 'in' / 'sub').mkdir(parents=True)
    good = anatomy(np.int16, shape=(2, 8, 8))
    sitk.WriteImage(make_image(good), str(tmp_path / 'in' / 'sub' / 'a.mha'))
    sitk.WriteImage(sitk.JoinSeries([make_image(good), make_image(good + 500)]), str(tmp_path / 'in' / 'b.nii.gz'))
    sitk.WriteImage(make_image(good), str(tmp_path / 'in' / 'c.nrrd'))
    (tmp_path / 'patients.csv').write_text('file,patient\nsub/a.mha,P7\nb.nii.gz,P7\n')
    report = prepare.build(prepare_cli.parse_args([
        str(tmp_path / 'in'), str(tmp_path / 'lmdb'), '--scales', '2', '--split-ratio', '1', '0', '0', '--quiet',
        '--patients-csv', str(tmp_path / 'patients.csv'), '--volume-channel', '1', '--plane', 'any']))
    assert report['counts']['train'] == 4
    assert [(i['case'], i['channel']) for i in report['included']] == [('case0000', 1), ('case0000', None)]
    assert [s['reason'] for s in report['skipped']] == ['not in patients.csv']
    assert sorted(read_lmdb(tmp_path / 'lmdb' / 'train' / 'HR.lmdb')) == [
        'case0000_00_s000', 'case0000_00_s001', 'case0000_01_s000', 'case0000_01_s001']
    split = json.loads((tmp_path / 'lmdb' / 'split.json').read_text())
    assert list(split['patients']) == [prepare.pseudonym('P7', (tmp_path / '.mrsr_secret').read_bytes().strip())]
    assert 'P7' not in json.dumps(report)
    (tmp_path / 'bad.csv').write_text('name,id\na.mha,P7\n')
    with pytest.raises(MRSRUserError, match='bad.csv: the patients CSV needs a header row with the columns file and '
                       r'patient \(found: name, id\)'):
        prepare.read_patients_csv(str(tmp_path / 'bad.csv'))


def test_a_prostate_nifti_goes_through_prepare_training_and_inference(tmp_path):
    """Done means (issue 12): four slices of the embedded test patient's T2 series, cropped to 96x96, as NIfTI ->
    lmdb_prepare (the LMDB holds its slices) -> 2 iterations of a tiny MRDAB through BasicSR's loop -> mrsr-infer
    on the NIfTI -> NIfTI x2 with the same outer edges and pixel type."""
    folder = next(root for root, _, files in os.walk(PROSTATE_T2) if any(f.endswith('.dcm') for f in files))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(folder))
    crop = reader.Execute()[144:240, 144:240, 7:11]  # (x, y, z): the centre of the prostate slices
    (tmp_path / 'in').mkdir()
    nifti = tmp_path / 'in' / 'Prostate3T-03-0005.nii.gz'
    sitk.WriteImage(crop, str(nifti))
    prepared = tmp_path / 'prepared'
    report = prepare.build(prepare_cli.parse_args([str(tmp_path / 'in'), str(prepared), '--scales', '2', '--split-ratio',
                                               '1', '0', '0', '--quiet']))
    assert report['counts'] == {'train': 4, 'val': 0, 'test': 0}
    assert len(read_lmdb(prepared / 'train' / 'HR.lmdb')) == 4
    assert (prepared / 'train' / 'LR_x2.lmdb' / 'meta_info.txt').read_text().count('(48,48,1)') == 4

    opt = use_prepared_lmdb(tiny_options(tmp_path, 'volume_run', total_iter=2, model_type='SRModel'), prepared)
    del opt['datasets']['val'], opt['val']
    proc = run_python([mrsr_plugin.train.__file__, '-opt', write_options(tmp_path / 'run.yml', opt)], cwd=tmp_path,
                      env={'MRSR_ROOT': str(tmp_path)})
    assert proc.returncode == 0, proc.stdout[-4000:]
    weights = tmp_path / 'experiments' / 'volume_run' / 'models' / 'net_g_latest.pth'

    assert run_infer('-i', nifti, '-o', tmp_path / 'sr', '-w', weights, '--arch-args', json.dumps(opt['network_g']),
                     '-q') == 0
    output = sitk.ReadImage(str(tmp_path / 'sr' / 'Prostate3T-03-0005_SRx2.nii.gz'))
    source = sitk.ReadImage(str(nifti))
    assert output.GetSize() == (192, 192, 4) and output.GetPixelID() == source.GetPixelID()
    assert np.abs(outer_corners(output) - outer_corners(source)).max() < 1e-4
    assert np.allclose(output.GetSpacing(), np.array(source.GetSpacing()) / (2, 2, 1), atol=1e-6)
