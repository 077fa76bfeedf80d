"""The DICOM mutation fuzzer (mrsr_plugin.apps.fuzz, scripts/fuzz_inputs.py) on a few small seeds: mutated copies
of real MR series mixed with good ones, through mrsr-prepare and mrsr-infer (in this process, a tiny MRDABNet): no
traceback or library warning on the console, every good series produced and identical to the clean run, every
file accounted for. The long run is ``python scripts/fuzz_inputs.py --n 1000 --seed 0 1 2 3 4``."""
import hashlib
import os

import pytest

from mrsr_plugin.apps import fuzz
from mrsr_plugin.apps.infer import run as infer_run
from mrsr_plugin.errors import isolate
from mrsr_plugin.mrio import dicom


@pytest.fixture(scope='module')
def sources():
    return fuzz.load_sources(crop=32)


@pytest.fixture(scope='module')
def model(tmp_path_factory):
    return fuzz.tiny_model(str(tmp_path_factory.mktemp('model')))


def digest(folder):
    return {os.path.relpath(os.path.join(d, f), folder): hashlib.sha256(open(os.path.join(d, f), 'rb').read()).digest()
            for d, _, files in os.walk(folder) for f in files}


def test_the_same_seed_builds_the_same_corpus(tmp_path, sources):
    a = fuzz.build_corpus(str(tmp_path / 'a'), 40, 3, sources)
    b = fuzz.build_corpus(str(tmp_path / 'b'), 40, 3, sources)
    assert a.bad == b.bad and a.good == b.good and digest(a.root) == digest(b.root)
    assert a.files >= 40 and a.good and a.bad and sum(len(files) for files in a.bad.values()) > 0
    c = fuzz.build_corpus(str(tmp_path / 'c'), 40, 4, sources)
    assert digest(c.root) != digest(a.root)


@pytest.mark.parametrize('seed', [0, 1])
def test_fuzz_both_tools(tmp_path, sources, model, seed):
    result = fuzz.fuzz(str(tmp_path / 'work'), 50, seed, sources, model, in_process=True)
    for tool, figures in result['tools'].items():
        print(f'seed {seed} {tool}: {result["files"]} files, {result["series"]} series, {figures["produced"]} '
              f'produced, {figures["skipped"]} skipped, {figures["tracebacks"]} tracebacks')
        assert figures['failures'] == [], (tool, figures['failures'])
        assert figures['good_produced'] == result['good_series'] and figures['skipped'] > 0


def test_the_fuzzer_sees_a_run_that_one_bad_series_stops(tmp_path, sources, model, monkeypatch):
    """Without the header check and the per-input guard (as before issue 19), the same corpus stops mrsr-infer at
    the first bad series (a traceback, or exit status 2 with no report), and the check says so."""

    class Unguarded(isolate):
        def __exit__(self, kind, err, tb):
            super().__exit__(kind, err, tb)
            return False

    monkeypatch.setattr(dicom, 'header_problem', lambda ds, pixel_data=True: None)
    monkeypatch.setattr(infer_run, 'isolate', Unguarded)
    result = fuzz.fuzz(str(tmp_path / 'work'), 50, 0, sources, model, in_process=True, tools=('infer', ))
    figures = result['tools']['infer']
    assert not result['ok'] and (figures['tracebacks'] or figures['status'] == 2), figures
    assert any(failure.startswith(('exit status', 'no report')) for failure in figures['failures'])
