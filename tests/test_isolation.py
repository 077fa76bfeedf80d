"""Isolation by construction (issue 19): whatever goes wrong in the work on one input of mrsr-prepare or mrsr-infer,
of whatever type, is that input's skip (one line on the console, the traceback in the report, exit status 1); only
what no input escapes ends the run (an OSError on the output, a full disk, Ctrl-C: exit status 2 or 130).

The failures are injected into the per-series work with monkeypatch, with exception types no code path expects.
"""
import errno
import json
import logging
import os
import warnings

import cv2
import numpy as np
import pydicom
import pytest
import torch
from conftest import run_infer
from test_bad_headers import write_series

from mrsr_plugin.apps import prepare
from mrsr_plugin.apps.fuzz import tiny_model
from mrsr_plugin.apps.infer import dicom as infer_dicom
from mrsr_plugin.apps.infer.run import REPORT_NAME
from mrsr_plugin.cli import prepare as prepare_cli
from mrsr_plugin.errors import RunStopError, isolate, stops_the_run


class Surprise(Exception):
    """A type of error that no handler names."""


# --- the guard -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize('error, stops', [
    (Surprise('boom'), False),
    (ZeroDivisionError('division by zero'), False),
    (MemoryError(), False),
    (RecursionError('maximum recursion depth exceeded'), False),
    (PermissionError(errno.EACCES, 'Permission denied', '/data/in/slice1.dcm'), False),  # an input
    (PermissionError(errno.EACCES, 'Permission denied', '/data/out/series/IM0001.dcm'), True),  # the output
    (OSError(errno.ENOSPC, 'No space left on device'), True),  # wherever it happens
    (OSError(errno.EROFS, 'Read-only file system', '/data/in/x'), True),
    (RunStopError('cannot go on'), True),
    (KeyboardInterrupt(), True),
    (SystemExit(2), True),
    (torch.cuda.OutOfMemoryError('CUDA out of memory'), True),
], ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v))
def test_what_stops_the_run(error, stops):
    assert stops_the_run(error, output='/data/out') is stops


def test_a_chained_full_disk_stops_the_run():
    """pydicom's writer re-raises an OSError without errno from the one with it."""
    try:
        try:
            raise OSError(errno.ENOSPC, 'No space left on device')
        except OSError as inner:
            raise OSError('With tag (7FE0,0010) got exception: ...') from inner
    except OSError as outer:
        assert stops_the_run(outer)


def test_the_guard_keeps_the_error_its_traceback_and_the_messages():
    with isolate() as guard:
        warnings.warn('odd value', UserWarning)
        logging.getLogger('pydicom').warning('logged by pydicom')
        {}['missing']
    assert isinstance(guard.error, KeyError) and guard.reason == "unexpected KeyError: 'missing'"
    assert guard.traceback.startswith('Traceback (most recent call last):') and "KeyError: 'missing'" in guard.traceback
    assert 'test_isolation.py", line' in guard.traceback and os.path.abspath(__file__) not in guard.traceback
    assert guard.messages == ['UserWarning: odd value', 'logged by pydicom']
    with pytest.raises(KeyboardInterrupt):
        with isolate():
            raise KeyboardInterrupt
    with isolate() as guard:
        raise MemoryError
    assert guard.reason == 'out of memory (MemoryError) while working on it'


# --- both tools ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def model(tmp_path_factory):
    return tiny_model(str(tmp_path_factory.mktemp('model')))


@pytest.fixture
def tree(tmp_path):
    """Three series of three files each: a, b (the one that fails) and c."""
    for name in 'abc':
        write_series(str(tmp_path / 'in' / name))
    return tmp_path / 'in'


def failing_for(function, folder, error):
    """``function``, raising ``error`` when its first argument is series ``folder`` (or a slice of it)."""

    def wrapper(first, *args, **kwargs):
        where = first.files[0] if hasattr(first, 'files') else getattr(first, 'filename', '')
        if f'{os.sep}{folder}{os.sep}' in str(where):
            raise error
        return function(first, *args, **kwargs)

    return wrapper


def run_prepare(source, output, capsys):
    args = [str(source), str(output), '--scales', '2', '--split-ratio', '1', '1', '1', '--plane', 'any',
            '--keep-patient-ids', '--secret-file', str(output) + '.secret']
    try:
        prepare_cli.main(args)
        status = 0
    except SystemExit as exit_:
        status = exit_.code
    captured = capsys.readouterr()
    return status, captured.out + captured.err


@pytest.mark.parametrize('error, reason', [
    (Surprise('boom'), 'unexpected Surprise: boom'),
    (MemoryError(), 'out of memory (MemoryError) while working on it'),
    (PermissionError(errno.EACCES, 'Permission denied', '/elsewhere/in/b/slice0.dcm'),
     "unexpected PermissionError: [Errno 13] Permission denied: '/elsewhere/in/b/slice0.dcm'"),
])
def test_prepare_skips_the_series_whatever_the_error(tree, tmp_path, monkeypatch, capsys, error, reason):
    monkeypatch.setattr(prepare, 'load_series', failing_for(prepare.load_series, 'b', error))
    status, console = run_prepare(tree, tmp_path / 'out', capsys)
    assert status == 1 and 'Traceback' not in console, console
    assert f'skipped b/slice0.dcm: {reason}; its series (3 files) is skipped' in console
    report = json.loads((tmp_path / 'out' / 'report.json').read_text())
    assert [i['path'] for i in report['included']] == ['a', 'c'] and sum(report['counts'].values()) == 6
    (skipped, ) = report['skipped']
    assert (skipped['path'], skipped['files'], skipped['fault']) == ('b/slice0.dcm', 3, True)
    assert skipped['traceback'].startswith('Traceback (most recent call last):')
    assert skipped['traceback'].rstrip().endswith(f'{type(error).__name__}' + (f': {error}' if str(error) else ''))


@pytest.mark.parametrize('case', ['ctrl-c', 'full disk', 'output not writable'])
def test_prepare_stops_for_what_no_input_escapes(tree, tmp_path, monkeypatch, capsys, case):
    """Series a is done when b fails: the run ends all the same, exit 2 (130), and leaves nothing behind."""
    load_series = prepare.load_series

    def failing(series):
        if f'{os.sep}b{os.sep}' not in series.files[0]:
            return load_series(series)
        if case == 'ctrl-c':
            raise KeyboardInterrupt
        if case == 'full disk':
            raise OSError(errno.ENOSPC, 'No space left on device')
        (staging, ) = tmp_path.glob('.out.partial-*')  # where the output is being built
        raise PermissionError(errno.EACCES, 'Permission denied', str(staging / 'train'))

    monkeypatch.setattr(prepare, 'load_series', failing)
    status, console = run_prepare(tree, tmp_path / 'out', capsys)
    last = console.strip().splitlines()[-1]
    assert 'Traceback' not in console, console
    assert (status, last) == {'ctrl-c': (130, 'lmdb_prepare: interrupted'),
                              'full disk': (2, 'lmdb_prepare: error: No space left on device (the disk or quota is '
                                            'full)'),
                              'output not writable': (2, f'lmdb_prepare: error: {tmp_path}/.out.partial-'
                                                      f'{last.split(".out.partial-")[-1]}')}[case]
    assert last.endswith('Permission denied') or case != 'output not writable'
    assert os.listdir(tmp_path) == ['in']  # nothing that looks like an output, no staging folder


@pytest.mark.parametrize('error, reason', [
    (Surprise('boom'), 'unexpected Surprise: boom'),
    (IndexError('tuple index out of range'), 'unexpected IndexError: tuple index out of range'),
    (MemoryError(), 'out of memory (MemoryError) while working on it'),
])
def test_infer_skips_the_series_whatever_the_error(tree, tmp_path, model, monkeypatch, capsys, error, reason):
    """The error strikes while the series' first derived file is being made: nothing of it is left."""
    monkeypatch.setattr(infer_dicom, 'derive_dataset', failing_for(infer_dicom.derive_dataset, 'b', error))
    status = run_infer('-i', tree, '-o', tmp_path / 'out', '-w', model[0], '-opt', model[1])
    captured = capsys.readouterr()
    console = captured.out + captured.err
    assert status == 1 and 'Traceback' not in console, console
    assert f'skipped b/slice0.dcm: {reason}; its series (3 files) is skipped' in console
    report = json.loads((tmp_path / 'out' / REPORT_NAME).read_text())
    assert [p['source'] for p in report['produced']] == ['a', 'c']
    assert sorted(os.listdir(tmp_path / 'out')) == sorted([p['output'] for p in report['produced']] + [REPORT_NAME])
    (skipped, ) = report['skipped']
    assert (skipped['path'], skipped['files']) == ('b/slice0.dcm', 3) and 'derive_dataset' in skipped['traceback']


def test_infer_stops_on_an_unwritable_output_and_on_ctrl_c(tree, tmp_path, model, monkeypatch, capsys):
    def refuse(path, ds, **kwargs):
        raise PermissionError(errno.EACCES, 'Permission denied', path)

    monkeypatch.setattr(pydicom, 'dcmwrite', refuse)
    assert run_infer('-i', tree, '-o', tmp_path / 'out', '-w', model[0], '-opt', model[1], '-q') == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f'mrsr-infer: error: {tmp_path / "out"}') and err.endswith('Permission denied'), err
    assert '\n' not in err and not (tmp_path / 'out').exists()
    monkeypatch.undo()
    monkeypatch.setattr(infer_dicom, 'derive_dataset',
                        failing_for(infer_dicom.derive_dataset, 'b', KeyboardInterrupt()))
    assert run_infer('-i', tree, '-o', tmp_path / 'out', '-w', model[0], '-opt', model[1], '-q') == 130
    assert capsys.readouterr().err.strip() == 'mrsr-infer: interrupted'
    assert not (tmp_path / 'out' / REPORT_NAME).exists() and not any(
        name.startswith('.') for name in os.listdir(tmp_path / 'out'))  # series a whole, no half of b


def test_infer_skips_one_group_of_images_and_writes_the_others(tmp_path, model, capsys):
    """PNG slices are normalised per folder, size and bit depth: a group that cannot be (constant) is skipped
    alone; before, it cost every image of the input."""
    rng = np.random.default_rng(0)
    for folder, images in (('anatomy', [rng.integers(0, 65535, (40, 48), np.uint16) for _ in range(2)]),
                           ('blank', [np.full((40, 48), 7, np.uint16)] * 2)):
        os.makedirs(tmp_path / 'in' / folder)
        for i, image in enumerate(images):
            cv2.imwrite(str(tmp_path / 'in' / folder / f'{i}.png'), image)
    status = run_infer('-i', tmp_path / 'in', '-o', tmp_path / 'out', '-w', model[0], '-opt', model[1])
    captured = capsys.readouterr()
    assert status == 1 and 'Traceback' not in captured.err, captured.err
    assert 'skipped blank: constant intensity 7.0 within the normalisation window' in captured.err
    written = sorted(os.path.relpath(os.path.join(d, f), tmp_path / 'out' / 'in_SRx2')
                     for d, _, files in os.walk(tmp_path / 'out' / 'in_SRx2') for f in files)
    assert written == ['anatomy/0.png', 'anatomy/1.png']
    report = json.loads((tmp_path / 'out' / REPORT_NAME).read_text())
    assert [(p['slices'], p['files']) for p in report['produced']] == [(2, 2)]
    assert [(s['path'], s['files']) for s in report['skipped']] == [('blank', 2)]


def test_prepare_leaves_out_a_slice_that_cannot_be_degraded(tree, tmp_path, monkeypatch, capsys):
    """Pass 2 (degrade and write) guards each slice as pass 1 guards each series."""
    degrade = prepare.degrade

    def failing(hr, scale, config, rng):
        failing.calls += 1
        if failing.calls == 5:  # one slice, at x2
            raise Surprise('boom')
        return degrade(hr, scale, config, rng)

    failing.calls = 0
    monkeypatch.setattr(prepare, 'degrade', failing)
    status, console = run_prepare(tree, tmp_path / 'out', capsys)
    assert status == 1 and 'Traceback' not in console, console
    report = json.loads((tmp_path / 'out' / 'report.json').read_text())
    (skipped, ) = report['skipped']
    assert f"skipped {skipped['path']}: {skipped['reason']}" in console
    assert skipped['reason'].startswith('slice ') and skipped['reason'].endswith('left out: unexpected Surprise: boom')
    assert skipped['files'] == 0 and 'Surprise: boom' in skipped['traceback']
    assert sum(report['counts'].values()) == 8 and sum(i['slices_kept'] for i in report['included']) == 8
