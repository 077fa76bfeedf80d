"""DICOM and image-folder input: real pydicom test files and synthetic TCIA-like trees built from MR_small.dcm.

MR_small.dcm is a 64x64 signed 16-bit axial MR slice (values 0-4000); the other MR_small_* files hold the same
pixels in other transfer syntaxes.
"""
import os
import re
import shutil
import tracemalloc

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder
from pydicom.sequence import Sequence
from pydicom.uid import MPEG2MPML, generate_uid

from mrsr_plugin.errors import MRSRUserError
from mrsr_plugin.mrio.dicom import (DicomInputError, Series, Skipped, load_series, read_image_folder,
                                       scan_dicom_tree, series_skip_reason)

AXIAL = [1, 0, 0, 0, 1, 0]  # slice normal +z
SAGITTAL = [0, 1, 0, 0, 0, -1]  # slice normal -x
CORONAL = [1, 0, 0, 0, 0, -1]  # slice normal +y
# for the slice at the i-th position along the normal: its InstanceNumber and the number in its file name
INSTANCE_NUMBERS = [3, 5, 1, 4, 2]
NAME_NUMBERS = [4, 1, 5, 2, 3]


def pydicom_file(name):
    """Local path of a pydicom / pydicom-data test file; skips the test where it would need a download."""
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f'{name} is not available offline')
    return path


@pytest.fixture(scope='module')
def reference():
    """MR_small.dcm's stored pixels, int16 (64, 64)."""
    return pydicom.dcmread(pydicom_file('MR_small.dcm')).pixel_array


def write_slice(path, series_uid, position=None, orientation=AXIAL, instance_number=1, pixels=None, **attributes):
    """A copy of MR_small.dcm with new UIDs, the given geometry and pixels; an attribute set to None is deleted."""
    ds = pydicom.dcmread(pydicom_file('MR_small.dcm'))
    ds.SeriesInstanceUID = series_uid
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.ImageOrientationPatient = orientation
    ds.InstanceNumber = instance_number
    if position is None:
        del ds.ImagePositionPatient
    else:
        ds.ImagePositionPatient = list(position)
    if pixels is not None:
        ds.Rows, ds.Columns = pixels.shape[:2]
        ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    for keyword, value in attributes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_stack(folders, prefix, series_uid, orientation, reference, **attributes):
    """Five slices of one series at 4 mm steps along the slice normal, spread over ``folders`` in turn, with
    shuffled InstanceNumbers and file names. Slice i holds ``reference + 1000 * i``."""
    normal = np.cross(orientation[:3], orientation[3:])
    for i in range(5):
        position = (4.0 * i - 8) * normal + (-100, -120, 30)
        name = f'{prefix}-{NAME_NUMBERS[i]:02d}.dcm'
        write_slice(os.path.join(folders[i % len(folders)], name), series_uid, position, orientation,
                    INSTANCE_NUMBERS[i], reference + 1000 * i, **attributes)


def scan_one(folder):
    """The single series a folder holds."""
    series, skipped = scan_dicom_tree(str(folder))
    assert skipped == [] and len(series) == 1, (series, skipped)
    return series[0]


def load_copy(tmp_path, path):
    """Copy one file into its own folder (the MR_small_* files share a SeriesInstanceUID), scan it and load it."""
    folder = tmp_path / os.path.basename(path)
    folder.mkdir()
    shutil.copy(path, folder)
    return load_series(scan_one(folder))


def read_positions(series):
    return np.array([pydicom.dcmread(path).ImagePositionPatient for path in series.files], dtype=float)


# --- transfer syntaxes, frames, pixel value transforms ----------------------------------------------------------


@pytest.mark.parametrize('name', [
    'MR_small.dcm', 'MR_small_bigendian.dcm', 'MR_small_implicit.dcm', 'MR_small_expb.dcm', 'MR_small_RLE.dcm',
    'MR_small_padded.dcm'
])
@pytest.mark.filterwarnings('ignore:The pixel data is 8320 bytes long')  # MR_small_padded's trailing padding
def test_transfer_syntaxes_load_the_same_pixels(tmp_path, reference, name):
    volume = load_copy(tmp_path, pydicom_file(name))
    assert volume.dtype == np.float32 and volume.shape == (1, 64, 64)
    np.testing.assert_array_equal(volume[0], reference)


def series_of(path, rows=64, columns=64):
    """A one-file Series built by hand, as if the file had changed since a scan that accepted it."""
    return Series(uid='1.2', patient_id='', study_uid='', description='', modality='MR', orientation=None,
                  files=[str(path)], rows=rows, columns=columns, num_slices=1)


@pytest.mark.parametrize('name', ['MR_small_jpeg_ls_lossless.dcm', 'MR_small_jp2klossless.dcm'])
def test_compressed_decode_or_name_the_package_to_install(tmp_path, reference, name):
    """Decodability is checked by the scan, so that an undecodable series never reaches loading."""
    path = pydicom_file(name)
    if get_decoder(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID).is_available:
        np.testing.assert_array_equal(load_copy(tmp_path, path)[0], reference)
    else:
        copy = shutil.copy(path, tmp_path)
        series, (skipped, ) = scan_dicom_tree(str(tmp_path))
        assert series == [] and skipped.path == copy
        assert re.fullmatch(r'compressed with .*; install pylibjpeg.* to decode it', skipped.reason), skipped.reason
        with pytest.raises(DicomInputError, match=rf'{name}: compressed with .*; install pylibjpeg.* to decode it'):
            load_series(series_of(copy))


def test_transfer_syntax_without_any_decoder(tmp_path):
    """pydicom has no MPEG-2 decoder at all (get_decoder raises NotImplementedError)."""
    ds = pydicom.dcmread(pydicom_file('MR_small_RLE.dcm'))
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    ds.save_as(tmp_path / 'video.dcm')
    reason = 'compressed with MPEG2 Main Profile / Main Level, which pydicom cannot decode'
    assert scan_dicom_tree(str(tmp_path)) == ([], [Skipped(str(tmp_path / 'video.dcm'), reason)])
    assert series_skip_reason(series_of(tmp_path / 'video.dcm')) == f'{tmp_path / "video.dcm"}: {reason}'


def test_multiframe_loads_every_frame_in_order(tmp_path):
    path = pydicom_file('emri_small.dcm')
    series = scan_one(os.path.dirname(shutil.copy(path, tmp_path)))
    assert (series.num_slices, series.rows, series.columns, len(series.files)) == (10, 64, 64, 1)
    volume = load_series(series)
    assert volume.shape == (10, 64, 64)
    np.testing.assert_array_equal(volume, pydicom.dcmread(path).pixel_array)


def test_enhanced_multiframe_functional_groups(tmp_path):
    """Orientation and rescale of enhanced files live in functional groups; per-frame ones override shared ones."""
    ds = pydicom.dcmread(pydicom_file('emri_small.dcm'))
    raw = ds.pixel_array.astype(np.float32)
    shared, frame3 = Dataset(), Dataset()
    shared.PlaneOrientationSequence = Sequence([Dataset()])
    shared.PlaneOrientationSequence[0].ImageOrientationPatient = CORONAL
    shared.PixelValueTransformationSequence = Sequence([Dataset()])
    shared.PixelValueTransformationSequence[0].update({'RescaleSlope': 2, 'RescaleIntercept': -100})
    frame3.PixelValueTransformationSequence = Sequence([Dataset()])
    frame3.PixelValueTransformationSequence[0].update({'RescaleSlope': 3, 'RescaleIntercept': 0})
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    ds.PerFrameFunctionalGroupsSequence = Sequence([frame3 if i == 3 else Dataset() for i in range(10)])
    ds.save_as(tmp_path / 'enhanced.dcm')
    series = scan_one(tmp_path)
    assert series.plane == 'coronal'
    expected = 2 * raw - 100
    expected[3] = 3 * raw[3]
    np.testing.assert_array_equal(load_series(series), expected)


def test_rescale_slope_and_intercept(tmp_path, reference):
    write_slice(str(tmp_path / 'a.dcm'), generate_uid(), (0, 0, 0), RescaleSlope=2, RescaleIntercept=-100)
    np.testing.assert_array_equal(load_series(scan_one(tmp_path))[0], 2.0 * reference - 100)


@pytest.mark.parametrize('unsigned', [False, True])
def test_monochrome1_is_inverted_over_the_stored_range(tmp_path, reference, unsigned):
    if unsigned:  # 12 bits stored: 4095 - value
        pixels, expected = reference.astype(np.uint16), 4095.0 - reference
        attributes = dict(PixelRepresentation=0, BitsStored=12, HighBit=11, SmallestImagePixelValue=None,
                          LargestImagePixelValue=None)
    else:  # signed, 16 bits stored: (-32768 + 32767) - value
        pixels, expected, attributes = reference, -1.0 - reference, {}
    write_slice(str(tmp_path / 'a.dcm'), generate_uid(), (0, 0, 0), pixels=pixels,
                PhotometricInterpretation='MONOCHROME1', **attributes)
    np.testing.assert_array_equal(load_series(scan_one(tmp_path))[0], expected)


def test_non_square_slices_keep_rows_and_columns(tmp_path, reference):
    uid = generate_uid()
    for i in range(2):
        write_slice(str(tmp_path / f'{i}.dcm'), uid, (0, 0, 2 * i), instance_number=i, pixels=reference[:, :48] + i)
    series = scan_one(tmp_path)
    assert (series.rows, series.columns, series.num_slices) == (64, 48, 2)
    np.testing.assert_array_equal(load_series(series), np.stack([reference[:, :48], reference[:, :48] + 1]))


# --- broken files at load time -----------------------------------------------------------------------------------


def test_truncated_file_is_skipped_by_the_scan_and_refused_by_load(tmp_path):
    path = pydicom_file('MR_truncated.dcm')
    assert scan_dicom_tree(os.path.dirname(shutil.copy(path, tmp_path))) == (
        [], [Skipped(str(tmp_path / 'MR_truncated.dcm'), 'truncated file')])
    series = Series(uid='1.2', patient_id='', study_uid='', description='', modality='MR', orientation=None,
                    files=[path], rows=64, columns=64, num_slices=1)
    with pytest.raises(DicomInputError, match=r'MR_truncated\.dcm: truncated file') as error:
        load_series(series)
    assert isinstance(error.value, MRSRUserError)
    assert series_skip_reason(series) == str(error.value)


def test_pixel_data_shorter_than_the_image_size(tmp_path, reference):
    path = write_slice(str(tmp_path / 'short.dcm'), generate_uid(), (0, 0, 0), PixelData=reference.tobytes()[:-100])
    reason = 'pixel data of 8092 bytes, but 64x64 pixels x 1 frames of 16 bits need 8192: a wrong header or a cut file'
    assert scan_dicom_tree(str(tmp_path)) == ([], [Skipped(path, reason)])
    with pytest.raises(DicomInputError, match=r'short\.dcm: ' + re.escape(reason)):  # the same check at load
        load_series(series_of(path))


@pytest.mark.parametrize('compressed', [False, True])
def test_header_claiming_huge_images_is_skipped_without_allocating(tmp_path, compressed):
    """65535 x 65535 pixels would need 8 GiB as int16 and 16 GiB as float32; neither the scan nor a load allocates
    more than a few MB for it."""
    ds = pydicom.dcmread(pydicom_file('MR_small_RLE.dcm' if compressed else 'MR_small.dcm'))
    ds.Rows = ds.Columns = 65535
    ds.SeriesInstanceUID = generate_uid()
    ds.save_as(tmp_path / 'huge.dcm')
    tracemalloc.start()
    try:
        series, skipped = scan_dicom_tree(str(tmp_path))
        with pytest.raises(DicomInputError, match=r'huge\.dcm: slices of 65535x65535, expected 64x64'):
            load_series(series_of(tmp_path / 'huge.dcm'))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert series == [] and [s.path for s in skipped] == [str(tmp_path / 'huge.dcm')]
    assert skipped[0].reason == ('image size 65535x65535 (rows x columns) is not plausible for MR (at most 8192 a '
                                 'side): a broken header?')
    assert peak < 32 * 2**20


def test_file_changed_since_the_scan(tmp_path, reference):
    path = write_slice(str(tmp_path / 'a.dcm'), generate_uid(), (0, 0, 0))
    series = scan_one(tmp_path)
    write_slice(path, series.uid, (0, 0, 0), pixels=reference[:32])
    with pytest.raises(DicomInputError, match=r'a\.dcm: slices of 32x64, expected 64x64'):
        load_series(series)


# --- scanning trees -------------------------------------------------------------------------------------------------


@pytest.fixture
def tcia_tree(tmp_path, reference):
    """Two patients with an axial and a sagittal series each. Patient A's axial series is split over two folders,
    one of which also holds its sagittal series; folder names deliberately mislabel them."""
    root = tmp_path / 'Collection'
    uids = {}
    for patient in ('PAT-A', 'PAT-B'):
        study_uid, study = generate_uid(), root / patient / '01-01-2000-NA-MRI BRAIN-12345'
        folder1, folder2 = str(study / '1.000000-T2 TSE tra-111'), str(study / '2.000000-T2 sag-222')
        axial_folders = [folder1, folder2] if patient == 'PAT-A' else [folder1]
        sagittal_folders = [folder1] if patient == 'PAT-A' else [folder2]
        for description, orientation, folders, prefix in (('T2 TSE tra', AXIAL, axial_folders, '1'),
                                                          ('T2 sag', SAGITTAL, sagittal_folders, '2')):
            uids[patient, description] = generate_uid()
            write_stack(folders, prefix, uids[patient, description], orientation, reference, PatientID=patient,
                        StudyInstanceUID=study_uid, SeriesDescription=description)
    return root, uids


def test_tcia_tree_grouped_by_uid_and_ordered_along_the_normal(tcia_tree, reference):
    root, uids = tcia_tree
    series, skipped = scan_dicom_tree(str(root))
    assert skipped == []
    assert sorted((s.patient_id, s.description, s.uid) for s in series) == sorted(
        (patient, description, uid) for (patient, description), uid in uids.items())
    split = next(s for s in series if s.uid == uids['PAT-A', 'T2 TSE tra'])
    assert len({os.path.dirname(f) for f in split.files}) == 2
    for s in series:
        assert (s.num_slices, s.rows, s.columns, s.modality) == (5, 64, 64, 'MR')
        positions = read_positions(s)
        if s.description == 'T2 TSE tra':
            assert s.plane == 'axial' and s.orientation == tuple(map(float, AXIAL))
            assert np.all(np.diff(positions[:, 2]) > 0)  # z increases
        else:
            assert s.plane == 'sagittal' and s.orientation == tuple(map(float, SAGITTAL))
            assert np.all(np.diff(positions[:, 0]) < 0)  # the normal points to -x
        np.testing.assert_array_equal(load_series(s), np.stack([reference + 1000 * i for i in range(5)]))
    assert scan_dicom_tree(str(root), progress=True) == (series, skipped)


def test_order_falls_back_to_instance_number_without_positions(tmp_path, reference):
    write_stack([str(tmp_path)], '1', generate_uid(), AXIAL, reference, ImagePositionPatient=None)
    series = scan_one(tmp_path)
    assert [pydicom.dcmread(f).InstanceNumber for f in series.files] == [1, 2, 3, 4, 5]
    assert series.plane == 'axial'


def test_order_falls_back_to_instance_number_with_mixed_orientations(tmp_path, reference):
    """E.g. a three-plane localizer: one sagittal slice, last along the axial normal but InstanceNumber 1."""
    uid = generate_uid()
    write_stack([str(tmp_path)], '1', uid, AXIAL, reference)
    write_slice(str(tmp_path / f'1-{NAME_NUMBERS[2]:02d}.dcm'), uid, (0, 0, 100), SAGITTAL, INSTANCE_NUMBERS[2])
    series = scan_one(tmp_path)
    assert [pydicom.dcmread(f).InstanceNumber for f in series.files] == [1, 2, 3, 4, 5]
    assert series.orientation is None and series.plane == 'unknown'


@pytest.mark.parametrize('orientation, plane', [
    (AXIAL, 'axial'), (CORONAL, 'coronal'), (SAGITTAL, 'sagittal'), ([1, 0, 0, 0, 0.9, 0.44], 'axial'),
    ([0, 0.9, -0.44, 0, 0.44, 0.9], 'sagittal'), (None, 'unknown')
])
def test_plane_from_the_slice_normal(orientation, plane):
    series = Series(uid='1.2', patient_id='', study_uid='', description='', modality='MR',
                    orientation=orientation and tuple(orientation), files=[], rows=1, columns=1, num_slices=0)
    assert series.plane == plane


def test_bad_inputs_are_skipped_with_reasons(tmp_path, reference):
    good = generate_uid()
    for i in range(3):
        write_slice(str(tmp_path / 'good' / f'{i}.dcm'), good, (0, 0, i), instance_number=i)
    bad = tmp_path / 'bad'
    mixed = generate_uid()
    write_slice(str(bad / 'mixed' / 'a.dcm'), mixed, (0, 0, 0))
    write_slice(str(bad / 'mixed' / 'b.dcm'), mixed, (0, 0, 1), pixels=reference[:, :48])
    write_slice(str(bad / 'colour.dcm'), generate_uid(), (0, 0, 0), pixels=np.zeros((64, 64, 3), np.uint8),
                SamplesPerPixel=3, PhotometricInterpretation='RGB', PlanarConfiguration=0, BitsAllocated=8,
                BitsStored=8, HighBit=7, PixelRepresentation=0)
    shutil.copy(tmp_path / 'good' / '1.dcm', tmp_path / 'good' / 'copy of 1.dcm')  # sorts after the original
    write_slice(str(bad / 'no_pixels.dcm'), generate_uid(), (0, 0, 0), PixelData=None)
    write_slice(str(bad / 'no_series_uid.dcm'), '', (0, 0, 0))
    full = open(write_slice(str(bad / 'cut.dcm'), good, (0, 0, 5)), 'rb').read()
    (bad / 'cut.dcm').write_bytes(full[:len(full) // 2])
    (bad / 'notes.dcm').write_text('not DICOM\n' * 50)
    (bad / 'empty.dcm').write_bytes(b'')
    (bad / '.DS_Store').write_bytes(b'\0' * 200)  # hidden files are ignored silently
    shutil.copy(pydicom_file('CT_small.dcm'), bad / 'IM0001')
    shutil.copy(pydicom_file('DICOMDIR'), bad / 'DICOMDIR')
    (tmp_path / 'empty folder').mkdir()

    series, skipped = scan_dicom_tree(str(tmp_path))
    # cut.dcm is a slice of its own (not a copy): the series notes the gap
    assert [(s.uid, len(s.files), s.warnings) for s in series] == [
        (good, 3, ['1 file(s) of this series skipped, e.g. cut.dcm: slices missing from the series'])]
    mixed_reason = 'its series mixes slice sizes 64x48 (1 file) and 64x64 (1 file) (rows x columns); this file is '
    assert {s.path: s.reason for s in skipped} == {
        str(bad / 'mixed' / 'a.dcm'): mixed_reason + '64x64',
        str(bad / 'mixed' / 'b.dcm'): mixed_reason + '64x48',
        str(bad / 'colour.dcm'): 'colour image (3 samples per pixel); MR slices are single-channel',
        str(tmp_path / 'good' / 'copy of 1.dcm'): f'duplicate of {tmp_path / "good" / "1.dcm"} (same SOPInstanceUID)',
        str(bad / 'no_pixels.dcm'): 'no pixel data',
        str(bad / 'no_series_uid.dcm'): 'no SeriesInstanceUID',
        str(bad / 'cut.dcm'): 'truncated file',
        str(bad / 'notes.dcm'): 'not a DICOM file',
        str(bad / 'empty.dcm'): 'empty file',
        str(bad / 'IM0001'): 'modality CT, not MR',
        str(bad / 'DICOMDIR'): 'DICOMDIR index, not an image',
    }


def test_symbolic_links_are_followed_once(tmp_path, reference):
    """A series linked in from elsewhere is found; a loop, a broken link, a folder linked twice and a file reached
    through two paths are each reported, and nothing is read twice."""
    outside, root = tmp_path / 'shared storage', tmp_path / 'root'
    uid = generate_uid()
    for i in range(2):
        write_slice(str(outside / 'series' / f'{i}.dcm'), uid, (0, 0, i), instance_number=i + 1)
    (root / 'patient').mkdir(parents=True)
    os.symlink(outside / 'series', root / 'patient' / 'linked series')
    os.symlink(outside / 'series', root / 'patient' / 'same series again')
    os.symlink(outside / 'series' / '0.dcm', root / 'patient' / 'file link.dcm')
    os.symlink(root, root / 'patient' / 'loop')
    os.symlink(tmp_path / 'nowhere.dcm', root / 'patient' / 'broken.dcm')
    os.mkfifo(root / 'patient' / 'pipe.dcm')

    series, skipped = scan_dicom_tree(str(root))
    assert [(s.uid, len(s.files)) for s in series] == [(uid, 2)]
    linked, again = root / 'patient' / 'linked series', root / 'patient' / 'same series again'
    assert series[0].files == [str(root / 'patient' / 'file link.dcm'), str(linked / '1.dcm')]
    assert {s.path: s.reason for s in skipped} == {
        str(root / 'patient' / 'broken.dcm'): 'broken symbolic link (its target does not exist)',
        str(root / 'patient' / 'pipe.dcm'): 'not a regular file',
        str(linked / '0.dcm'): f'same file as {root / "patient" / "file link.dcm"} (reached through a symbolic link)',
        str(root / 'patient' / 'loop'): 'symbolic link loop (links to a folder above it)',
        str(again): f'symbolic link to a folder already scanned as {linked}',
    }


def test_duplicate_and_missing_positions_are_noted(tmp_path, reference):
    """Series that load but deserve a look carry warnings; an even number of images per position (echoes,
    diffusion b-values) does not."""
    echoes, extra, missing = generate_uid(), generate_uid(), generate_uid()
    for i in range(3):
        for echo in range(2):
            write_slice(str(tmp_path / 'echoes' / f'{i}-{echo}.dcm'), echoes, (0, 0, i), instance_number=2 * i + echo)
        write_slice(str(tmp_path / 'extra' / f'{i}.dcm'), extra, (0, 0, i), instance_number=i)
        write_slice(str(tmp_path / 'missing' / f'{i}.dcm'), missing, (0, 0, i) if i else None, instance_number=i)
    write_slice(str(tmp_path / 'extra' / 'again.dcm'), extra, (0, 0, 1), instance_number=9)
    series, skipped = scan_dicom_tree(str(tmp_path))
    assert skipped == []
    warnings = {s.uid: s.warnings for s in series}
    assert warnings == {
        echoes: [],
        extra: ['1 slice position(s) hold a different number of files than the others (1), e.g. 2 at 1 mm along the '
                'normal: a duplicate or a missing slice?'],
        missing: ['no ImagePositionPatient in 1 of 3 files: slices ordered by InstanceNumber'],
    }


def test_empty_and_missing_folders(tmp_path):
    assert scan_dicom_tree(str(tmp_path)) == ([], [])
    assert read_image_folder(str(tmp_path)) == ([], [])
    with pytest.raises(DicomInputError, match='nowhere: no such folder'):
        scan_dicom_tree(str(tmp_path / 'nowhere'))


# --- PNG / TIFF slices -------------------------------------------------------------------------------------------


def test_read_image_folder_keeps_values_and_bit_depth(tmp_path):
    rng = np.random.default_rng(0)
    grey8 = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    grey16 = rng.integers(0, 65536, (20, 30), dtype=np.uint16)
    tiff16 = rng.integers(0, 65536, (24, 16), dtype=np.uint16)
    colour = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    (tmp_path / 'case1' / 'sub').mkdir(parents=True)
    for name, img in (('case1/a.png', grey8), ('case1/b.png', grey16), ('case1/sub/c.tif', tiff16),
                      ('case1/grey_as_bgr.png', np.dstack([grey8] * 3)), ('colour.png', colour),
                      ('case1/grey_with_alpha.png', np.dstack([grey8] * 3 + [np.full_like(grey8, 255)])),
                      ('float.tiff', grey16.astype(np.float32)), ('case1/a.tiff', grey16)):
        assert cv2.imwrite(str(tmp_path / name), img)
    (tmp_path / 'broken.png').write_bytes(b'not a png')
    (tmp_path / 'notes.txt').write_text('ignored')

    images, skipped = read_image_folder(str(tmp_path))
    assert [name for name, _ in images] == ['case1/a', 'case1/b', 'case1/grey_as_bgr', 'case1/grey_with_alpha',
                                            'case1/sub/c']
    for (_, img), expected in zip(images, (grey8, grey16, grey8, grey8, tiff16)):
        assert img.dtype == expected.dtype
        np.testing.assert_array_equal(img, expected)
    assert {os.path.relpath(s.path, tmp_path): s.reason for s in skipped} == {
        'broken.png': 'unreadable image',
        'case1/a.tiff': f'same name as {tmp_path / "case1" / "a.png"} (keys must be unique)',
        'colour.png': 'colour image; MR slices are single-channel',
        'float.tiff': 'unsupported pixel type float32; expected 8- or 16-bit',
    }
