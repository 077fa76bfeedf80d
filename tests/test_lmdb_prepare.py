"""scripts/lmdb_prepare.py: DICOM tree -> patient-split LMDBs that BasicSR and the plugin dataset read."""
import gc
import hashlib
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import weakref

import cv2
import numpy as np
import pydicom
import pytest
from basicsr.data import build_dataset
from conftest import tiny_tmpfs
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from mrsr_plugin.mrio.lmdb import read_lmdb
from mrsr_plugin.apps import prepare
from mrsr_plugin.cli import prepare as prepare_cli
from mrsr_plugin.errors import MRSRUserError
from mrsr_plugin.data.mr_image import decode_to_float

NUM_PATIENTS, NUM_SLICES = 10, 4


def write_series(folder, patient, description, orientation, rng, num_slices=NUM_SLICES, size=64, constant=False):
    """A real MR header (MR_small.dcm) with new UIDs, shuffled InstanceNumbers and 12-bit random anatomy (or one
    grey value throughout, which cannot be normalised)."""
    template = pydicom.dcmread(get_testdata_file('MR_small.dcm'))
    series_uid, normal = generate_uid(), np.cross(orientation[:3], orientation[3:])
    os.makedirs(folder, exist_ok=True)
    volume = rng.integers(0, 4096, (num_slices, size, size)).astype(np.uint16)
    if constant:
        volume[:] = 1000
    for i, instance in enumerate(rng.permutation(num_slices)):
        ds = template.copy()
        ds.PatientID, ds.SeriesDescription, ds.SeriesInstanceUID = patient, description, series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.ImageOrientationPatient = [float(v) for v in orientation]
        ds.ImagePositionPatient = [float(v) for v in normal * 3.0 * i]
        ds.InstanceNumber = int(instance) + 1
        ds.Rows = ds.Columns = size
        ds.PixelData = volume[i].tobytes()
        ds.save_as(os.path.join(folder, f'{generate_uid()}.dcm'))
    return volume


@pytest.fixture(scope='module')
def tcia_tree(tmp_path_factory):
    """collection/patient/study/series/*.dcm: per patient an axial T2 (selected) and a sagittal T2 (not)."""
    root = tmp_path_factory.mktemp('tcia') / 'PROSTATEx'
    rng = np.random.default_rng(0)
    volumes = {}
    for p in range(NUM_PATIENTS):
        patient = f'ProstateX-{p:04d}'
        study = root / patient / 'study'
        volumes[patient] = write_series(study / 't2tra', patient, 't2_tse_tra', [1, 0, 0, 0, 1, 0], rng)
        write_series(study / 't2sag', patient, 't2_tse_sag', [0, 1, 0, 0, 0, -1], rng)
    (root / 'README.txt').write_text('not dicom')
    shutil.copy(get_testdata_file('CT_small.dcm'), root / 'ct.dcm')
    return root, volumes


def run(args):
    return prepare.build(prepare_cli.parse_args([str(a) for a in args] + ['--quiet']))


@pytest.fixture(scope='module')
def prepared(tcia_tree, tmp_path_factory):
    out = tmp_path_factory.mktemp('prepared') / 'prostate_mr'
    report = run([tcia_tree[0], out, '--scales', '2', '4'])
    return out, report


def test_patient_level_split_without_leakage(prepared, tcia_tree):
    out, report = prepared
    split = json.loads((out / 'split.json').read_text())
    assert sorted(split['patients'].values()).count('train') == 8
    assert sorted(split['patients'].values()).count('val') == 1
    assert not any(p in json.dumps(split) for p in tcia_tree[1])  # pseudonymised by default
    cases = {split_name: {key.split('_')[0] for key in read_lmdb(out / split_name / 'HR.lmdb')}
             for split_name in prepare.SPLITS}
    assert not (cases['train'] & cases['val'] or cases['train'] & cases['test'] or cases['val'] & cases['test'])
    assert report['counts'] == {'train': 8 * NUM_SLICES, 'val': NUM_SLICES, 'test': NUM_SLICES}


def test_selection_and_skips_are_reported(prepared):
    reasons = ' | '.join(s['reason'] for s in prepared[1]['skipped'])
    assert 'sagittal plane, not axial' in reasons
    assert 'not a DICOM file' in reasons or 'not DICOM' in reasons
    assert 'CT' in reasons


def test_lmdb_layout_matches_basicsr(prepared):
    out = prepared[0]
    meta = (out / 'train' / 'LR_x4.lmdb' / 'meta_info.txt').read_text().splitlines()
    key, shape, level = meta[0].split(' ')
    assert key.endswith('.png') and '.' not in key[:-4] and shape == '(16,16,1)' and level == '1'
    assert set(read_lmdb(out / 'train' / 'HR.lmdb')) == set(read_lmdb(out / 'train' / 'LR_x2.lmdb'))


def test_hr_keeps_16_bit_values_exactly(prepared, tcia_tree):
    """The stored HR equals the percentile-normalised series quantised to 16 bits, computed independently."""
    out, report = prepared
    split = json.loads((out / 'split.json').read_text())
    val_case = next(c for c, s in split['cases'].items() if s == 'val')
    secret = prepare.read_secret(prepare.default_secret_file(out), create=False)
    patient = next(p for p in tcia_tree[1] if split['patients'][prepare.pseudonym(p, secret)] == 'val')
    volume = tcia_tree[1][patient].astype(np.float64)
    low, high = np.percentile(volume, (0.5, 99.5))
    expected = np.round(np.clip((volume - low) / (high - low), 0, 1) * 65535).astype(np.uint16)
    items = read_lmdb(out / 'val' / 'HR.lmdb')
    for i in range(NUM_SLICES):
        stored = cv2.imdecode(np.frombuffer(items[f'{val_case}_00_s{i:03d}'], np.uint8), cv2.IMREAD_UNCHANGED)
        assert stored.dtype == np.uint16
        np.testing.assert_array_equal(stored, expected[i])  # slices ordered by position, not InstanceNumber


def test_basicsr_paired_image_dataset_reads_it(prepared):
    out = prepared[0]
    dataset = build_dataset({
        'name': 'x', 'type': 'PairedImageDataset', 'phase': 'val', 'scale': 4, 'io_backend': {'type': 'lmdb'},
        'dataroot_gt': str(out / 'val' / 'HR.lmdb'), 'dataroot_lq': str(out / 'val' / 'LR_x4.lmdb')
    })
    item = dataset[0]
    assert len(dataset) == NUM_SLICES and item['gt'].shape == (3, 64, 64) and item['lq'].shape == (3, 16, 16)


def test_plugin_dataset_reads_it_without_8_bit_rounding(prepared):
    out = prepared[0]
    items = read_lmdb(out / 'val' / 'HR.lmdb')  # before the dataset opens it: lmdb allows one env per process
    dataset = build_dataset({
        'name': 'x', 'type': 'ProstateMRPairedDataset', 'phase': 'val', 'scale': 2, 'io_backend': {'type': 'lmdb'},
        'dataroot_gt': str(out / 'val' / 'HR.lmdb'), 'dataroot_lq': str(out / 'val' / 'LR_x2.lmdb')
    })
    item = dataset[0]
    assert item['gt'].shape == (1, 64, 64) and item['lq'].shape == (1, 32, 32)
    stored = decode_to_float(items[item['gt_path']])[..., 0]
    np.testing.assert_array_equal(item['gt'][0].numpy(), stored)
    assert len(np.unique(np.round(item['gt'].numpy() * 65535))) > 256  # more grey levels than 8 bits hold


def test_same_seed_same_bytes_and_overwrite_rules(tcia_tree, prepared, tmp_path):
    out = tmp_path / 'again'
    run([tcia_tree[0], out, '--scales', '2', '4', '--noise-sigma', '0.01'])
    with pytest.raises(MRSRUserError, match='exists'):
        run([tcia_tree[0], out])
    first = read_lmdb(out / 'train' / 'LR_x2.lmdb')
    run([tcia_tree[0], out, '--scales', '2', '4', '--noise-sigma', '0.01', '--overwrite'])
    assert read_lmdb(out / 'train' / 'LR_x2.lmdb') == first
    noiseless = read_lmdb(prepared[0] / 'train' / 'LR_x2.lmdb')
    assert noiseless.keys() == first.keys() and noiseless != first
    assert sorted(os.listdir(tmp_path)) == ['.mrsr_secret', 'again']  # no temporary folders left behind


def test_interrupted_run_leaves_nothing_that_looks_complete(tcia_tree, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare, 'write_split', fail)
    with pytest.raises(KeyboardInterrupt):
        run([tcia_tree[0], tmp_path / 'out'])
    assert os.listdir(tmp_path) == ['.mrsr_secret']


def test_empty_folder_is_a_clear_error(tmp_path, capsys):
    (tmp_path / 'empty').mkdir()
    with pytest.raises(SystemExit) as exit_info:
        prepare_cli.main([str(tmp_path / 'empty'), str(tmp_path / 'out'), '--quiet'])
    assert exit_info.value.code == 2
    assert 'found no MR DICOM series' in capsys.readouterr().err and not (tmp_path / 'out').exists()


def test_caps_and_degradation_yaml(tcia_tree, tmp_path):
    config = tmp_path / 'deg.yml'
    config.write_text('degradation:\n  downsample: kspace\n  blur_sigma: [0.5, 1.0]\n')
    report = run([tcia_tree[0], tmp_path / 'out', '--scales', '3', '--max-slices', '5', '2', '0',
                  '--degradation-config', config, '--bit-depth', '8', '--png'])
    assert report['counts'] == {'train': 5, 'val': 2, 'test': NUM_SLICES}
    assert report['parameters']['degradation']['downsample'] == 'kspace'
    png = cv2.imread(str(next((tmp_path / 'out' / 'train' / 'LR_x3').iterdir())), cv2.IMREAD_UNCHANGED)
    assert png.dtype == np.uint8 and png.shape == (21, 21)  # HR 64 cropped to 63, a multiple of 3


def test_png_folder_input(tmp_path):
    rng = np.random.default_rng(1)
    for p in range(3):
        os.makedirs(tmp_path / 'slices' / f'patient{p}')
        for i in range(2):
            cv2.imwrite(str(tmp_path / 'slices' / f'patient{p}' / f'{i}.png'),
                        rng.integers(0, 65535, (32, 32)).astype(np.uint16))
    report = run([tmp_path / 'slices', tmp_path / 'out', '--normalize', 'none', '--split-ratio', '1', '1', '1'])
    assert report['counts'] == {'train': 2, 'val': 2, 'test': 2}


def test_split_file_is_reused_and_checked(tcia_tree, prepared, tmp_path):
    split = json.loads((prepared[0] / 'split.json').read_text())
    first_two = dict(sorted(split['patients'].items())[:2])
    (tmp_path / 'split.json').write_text(json.dumps({'patients': first_two}))
    with pytest.raises(MRSRUserError, match='made with another secret'):  # tmp_path/.mrsr_secret is new
        run([tcia_tree[0], tmp_path / 'out', '--split-file', tmp_path / 'split.json'])
    secret = prepare.default_secret_file(prepared[0])
    report = run([tcia_tree[0], tmp_path / 'out', '--split-file', tmp_path / 'split.json', '--secret-file', secret])
    assert sum(report['counts'].values()) == 2 * NUM_SLICES
    assert sum('not in' in s['reason'] for s in report['skipped']) == NUM_PATIENTS - 2
    (tmp_path / 'broken.json').write_text('{"patients": {"x": "holdout"}}')
    with pytest.raises(MRSRUserError, match='broken.json'):
        run([tcia_tree[0], tmp_path / 'out2', '--split-file', tmp_path / 'broken.json'])


# --- bad inputs, de-identification, streaming ----------------------------------------------------------------------


def small_tree(root, patients=4, bad=()):
    """``patients`` patients with one axial T2 each; those in ``bad`` have a constant series (fails to normalise)."""
    rng = np.random.default_rng(3)
    for p in range(patients):
        write_series(root / f'PAT-{p:03d}' / 'study' / 't2', f'PAT-{p:03d}', 't2_tse_tra', [1, 0, 0, 0, 1, 0], rng,
                     constant=p in bad)
    return root


def test_split_is_made_over_patients_whose_series_loaded(tmp_path):
    """A patient whose only series fails at load time holds no split: three good patients at 1:1:1 fill all three
    splits (before, the bad patient could take one and leave it empty without a word)."""
    root = small_tree(tmp_path / 'tree', bad=(0, ))
    report = run([root, tmp_path / 'out', '--split-ratio', 1, 1, 1])
    assert report['counts'] == {'train': NUM_SLICES, 'val': NUM_SLICES, 'test': NUM_SLICES}
    (skipped, ) = report['skipped']  # under its first file, whose name is a UID
    assert skipped['reason'].startswith('constant intensity')
    assert re.fullmatch(r'hmac:[0-9a-f]{16}/study/t2/uid-[0-9a-f]{12}\.dcm', skipped['path']), skipped['path']
    split = json.loads((tmp_path / 'out' / 'split.json').read_text())
    assert len(split['patients']) == 3 and sorted(split['cases']) == ['case0000', 'case0001', 'case0002']


def test_pseudonyms_are_keyed_and_the_report_carries_no_identifiers(tmp_path, tcia_tree):
    """HMAC with a 0600 secret beside the output: hashing a guessed PatientID does not give the pseudonym. The
    report has relative paths, pseudonyms for the patient folder, and no PatientID, UID or absolute path."""
    root, volumes = tcia_tree
    out = tmp_path / 'shared' / 'prostate_mr'
    run([root, out, '--scales', '2'])
    secret_file = tmp_path / 'shared' / '.mrsr_secret'
    assert stat.S_IMODE(os.stat(secret_file).st_mode) == 0o600 and not (out / '.mrsr_secret').exists()
    split = json.loads((out / 'split.json').read_text())
    guesses = {'sha256:' + hashlib.sha256(p.encode()).hexdigest()[:16] for p in volumes}
    assert all(key.startswith('hmac:') for key in split['patients']) and not guesses & set(split['patients'])
    secret = secret_file.read_bytes().strip()
    assert set(split['patients']) == {prepare.pseudonym(p, secret) for p in volumes}
    text = (out / 'report.json').read_text()
    report = json.loads(text)
    uids = {pydicom.dcmread(os.path.join(d, f)).SeriesInstanceUID for d, _, fs in os.walk(root) for f in fs
            if f.endswith('.dcm') and f != 'ct.dcm'}
    assert not any(p in text for p in volumes) and not any(uid in text for uid in uids)
    assert str(tmp_path) not in text and not re.search(r'\d+\.\d+\.\d+\.\d+\.\d+', text)
    assert {entry['path'].split('/')[0] for entry in report['included']} == set(split['patients'])
    assert {s['path'] for s in report['skipped']} >= {prepare.pseudonym('README', secret) + '.txt',
                                                      prepare.pseudonym('ct', secret) + '.dcm'}
    run([root, tmp_path / 'shared' / 'again', '--scales', '2'])  # same secret, same pseudonyms
    again = tmp_path / 'shared' / 'again'
    assert json.loads((again / 'split.json').read_text())['patients'] == split['patients']
    assert json.loads((again / 'report.json').read_text())['included'] == report['included']


@pytest.mark.parametrize('text, redacted', [
    ('1.2.826.0.1.3680043.8.498.25475.dcm', 'U.dcm'), ('a/1.3.6.1.4.1.14519.5.2.1/b', 'a/U/b'),
    ('2.25.329800735698586629295641978511506172918', 'U'), ('pylibjpeg>=2.0, gdcm>=3.0.10, window 0.5/99.5', None),
    ('numpy 1.26.4', None), ('e.g. 2 at 3 mm along the normal', None)])
def test_uid_tokens(text, redacted):
    assert prepare.UID_TOKEN.sub('U', text) == (redacted or text)


def test_split_files_with_real_ids_or_old_sha256_pseudonyms_keep_working(tmp_path):
    root = small_tree(tmp_path / 'tree', patients=3)
    legacy = {'sha256:' + hashlib.sha256(b'PAT-000').hexdigest()[:16]: 'val', 'PAT-001': 'test', 'PAT-002': 'train'}
    (tmp_path / 'split.json').write_text(json.dumps({'patients': legacy}))
    report = run([root, tmp_path / 'out', '--split-file', tmp_path / 'split.json'])
    assert report['counts'] == {'train': NUM_SLICES, 'val': NUM_SLICES, 'test': NUM_SLICES}
    assert {i['split'] for i in report['included']} == {'train', 'val', 'test'}
    kept = run([root, tmp_path / 'ids', '--split-file', tmp_path / 'split.json', '--keep-patient-ids'])
    assert json.loads((tmp_path / 'ids' / 'split.json').read_text())['patients'] == {
        'PAT-000': 'val', 'PAT-001': 'test', 'PAT-002': 'train'}
    assert kept['included'][0]['path'] == 'PAT-000/study/t2'


def test_one_volume_in_memory_at_a_time(tmp_path, monkeypatch):
    """Pass 1 drops each loaded series before the next is loaded; pass 2 reads the cached HR back."""
    root = small_tree(tmp_path / 'tree', patients=5)
    alive, load_series = [], prepare.load_series

    def tracked(series):
        gc.collect()
        assert not any(ref() is not None for ref in alive), 'an earlier volume is still referenced'
        volume = load_series(series)
        alive.append(weakref.ref(volume))
        return volume

    monkeypatch.setattr(prepare, 'load_series', tracked)
    report = run([root, tmp_path / 'out'])
    assert len(alive) == 5 and sum(report['counts'].values()) == 5 * NUM_SLICES
    assert not os.path.exists(tmp_path / 'out' / '.cache')


def test_skips_are_printed_and_leftovers_of_a_killed_run_removed(tmp_path, tcia_tree, capsys):
    dead = subprocess.Popen(['true'])
    dead.wait()
    leftover = tmp_path / f'.out.partial-{dead.pid}@{socket.gethostname()}@x'
    (leftover / 'train').mkdir(parents=True)
    prepare_cli.main([str(tcia_tree[0]), str(tmp_path / 'out'), '--scales', '2', '--max-slices', '1', '1', '1'])
    captured = capsys.readouterr()
    assert 'skipped README.txt: not a DICOM file' in captured.err
    assert 'skipped ct.dcm: modality CT, not MR' in captured.err
    assert re.search(r'wrote .*: train 1, val 1, test 1 slices from 10 inputs; 12 inputs skipped, 0 warnings',
                     captured.out)
    assert sorted(os.listdir(tmp_path)) == ['.mrsr_secret', 'out']


def test_write_error_is_one_line_naming_the_lmdb_and_leaves_nothing(tmp_path, tcia_tree, monkeypatch, capsys):
    """What a full disk does to LMDB (mdb_txn_commit: Input/output error), injected; see also the tmpfs test."""
    import lmdb

    real_open = lmdb.open

    class FullEnv:

        def __init__(self, path, **kwargs):
            self.env = real_open(path, **kwargs)

        def begin(self, write=False):
            txn = self.env.begin(write=write)

            class Txn:
                put = txn.put
                abort = txn.abort

                def commit(self):
                    raise lmdb.Error('mdb_txn_commit: Input/output error')

            return Txn()

        def close(self):
            self.env.close()

    monkeypatch.setattr(lmdb, 'open', FullEnv)
    with pytest.raises(SystemExit) as exit_info:
        prepare_cli.main([str(tcia_tree[0]), str(tmp_path / 'out'), '--scales', '2', '--quiet'])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and '\n' not in err, err
    assert re.fullmatch(r'lmdb_prepare: error: \S+/train/HR\.lmdb: cannot write \(Error: mdb_txn_commit: '
                        r'Input/output error; \d+ MB free on its disk\)', err), err
    assert os.listdir(tmp_path) == ['.mrsr_secret']


def test_a_really_full_disk(tmp_path, tcia_tree, capsys):
    """On a 256 KiB tmpfs (needs root; skipped elsewhere): one line, exit 2, nothing left but the secret."""
    with tiny_tmpfs(tmp_path / 'tiny', '256k') as mount:
        with pytest.raises(SystemExit) as exit_info:
            prepare_cli.main([str(tcia_tree[0]), str(mount / 'out'), '--scales', '2', '4', '--png', '--quiet'])
        err = capsys.readouterr().err.strip()
        assert exit_info.value.code == 2 and '\n' not in err and err.startswith('lmdb_prepare: error: '), err
        assert str(mount) in err and ('No space left on device' in err or 'cannot write' in err), err
        assert os.listdir(mount) == ['.mrsr_secret']
