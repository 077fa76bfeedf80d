"""mrsr-selfcheck on the CPU, end to end (tiny sizes; its CUDA branches are the same code with other values), and
its verdicts."""
import tempfile

import pytest

from mrsr_plugin.apps import selfcheck
from mrsr_plugin.cli.selfcheck import main as selfcheck_main

CHECKS = ('data: synthetic slices -> LMDB', 'train fp32, channels_last, prefetch', 'train bf16 AMP', 'train fp16 AMP',
          'train compile (tiny networks)', 'resume (--auto_resume)', 'torchrun, 1 process',
          'infer batch 4 vs 1 (fp32)', 'infer tiles 24+12 vs whole (fp32)', 'infer --precision bf16 vs fp32',
          'infer --precision fp16 vs fp32', 'throughput MRDAB x4 (tiny), bf16')


def test_selfcheck_on_cpu_passes_and_says_what_it_skipped(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))
    selfcheck_main(['--device', 'cpu'])
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith('mrsr-selfcheck: torch ') and 'on cpu' in lines[0] and 'tiny sizes' in lines[0]
    assert lines[1].split() == ['check', 'result', 'time']
    rows = {check: line[len(check):].strip() for check, line in zip(CHECKS, lines[2:])}
    assert list(rows) == list(CHECKS) and all(line.startswith(check) for check, line in zip(CHECKS, lines[2:]))
    for check, cell in rows.items():
        assert cell.startswith('skipped: CPU' if 'compile' in check else 'ok: '), (check, cell)
        assert cell.endswith(' s')
    assert 'prefetch_mode none' in rows['train fp32, channels_last, prefetch']
    assert 'GradScaler' in rows['train fp16 AMP']
    assert 'iteration 2 -> 4' in rows['resume (--auto_resume)']
    assert 'gloo' in rows['torchrun, 1 process']
    assert 'slices/s at batch' in rows['throughput MRDAB x4 (tiny), bf16']
    assert lines[-1].startswith('12 of 12 checks passed or skipped, 0 failed')
    assert list(tmp_path.iterdir()) == []  # the work folder is gone


def test_a_failed_check_fails_the_run_and_keeps_the_logs(tmp_path, monkeypatch, capsys):
    def failing(check):
        check.run('fails', lambda: (_ for _ in ()).throw(selfcheck.CheckFailed('it broke')))
        check.run('raises', lambda: 1 / 0)
        check.run('passes', lambda: 'fine')
        return check.rows

    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))
    monkeypatch.setattr(selfcheck.SelfCheck, 'all', failing)
    with pytest.raises(SystemExit) as exit_:
        selfcheck_main(['--device', 'cpu'])
    assert exit_.value.code == 1
    out = capsys.readouterr().out
    assert 'FAILED: it broke' in out and 'FAILED: ZeroDivisionError: division by zero' in out and 'ok: fine' in out
    assert '1 of 3 checks passed or skipped, 2 failed' in out
    (kept, ) = tmp_path.iterdir()
    assert f'work folder kept for its logs: {kept}' in out


def test_cuda_without_a_gpu_is_one_line(capsys, monkeypatch):
    monkeypatch.setattr(selfcheck.torch.cuda, 'is_available', lambda: False)
    with pytest.raises(SystemExit) as exit_:
        selfcheck_main(['--device', 'cuda'])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == 'mrsr-selfcheck: error: --device cuda: no CUDA device available\n'
