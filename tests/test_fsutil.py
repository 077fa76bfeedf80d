"""mrsr_plugin.fsutil and the tools' error wrapper: staging folders of killed runs are removed, errors are one line."""
import errno
import io
import os
import socket
import subprocess
import sys

import pydicom
import pytest
from pydicom.data import get_testdata_file

from mrsr_plugin import fsutil
from mrsr_plugin.errors import MRSRUserError
from mrsr_plugin.cli.common import guarded


def dead_pid():
    proc = subprocess.Popen(['true'])
    proc.wait()
    return proc.pid


def test_write_atomically_removes_what_a_killed_run_left(tmp_path):
    host = socket.gethostname()
    killed = tmp_path / f'.series.partial-{dead_pid()}@{host}@abc'
    live = tmp_path / f'.series.partial-{os.getpid()}@{host}@def'
    other = tmp_path / f'.other.partial-{dead_pid()}@{host}@x'  # another output's: not touched
    for folder in (killed, live, other):
        folder.mkdir()
        (folder / 'IM0001.dcm').write_bytes(b'patient data')

    def write(folder):
        with open(os.path.join(folder, 'IM0001.dcm'), 'wb') as f:
            f.write(b'new')

    fsutil.write_atomically(str(tmp_path), 'series', False, write)
    assert sorted(os.listdir(tmp_path)) == sorted(['series', live.name, other.name])


def test_write_atomically_leaves_nothing_when_write_fails(tmp_path):

    def fail(folder):
        raise OSError(errno.ENOSPC, 'No space left on device', os.path.join(folder, 'x'))

    with pytest.raises(OSError):
        fsutil.write_atomically(str(tmp_path), 'out', False, fail)
    assert os.listdir(tmp_path) == []


def test_os_error_wrapped_by_pydicom_is_one_line():
    """pydicom's writer re-raises an OSError with its traceback in the message; the innermost errno is used."""
    ds = pydicom.dcmread(get_testdata_file('MR_small.dcm'))

    class FullDisk(io.BytesIO):

        def write(self, data):
            if self.tell() + len(data) > 2000:  # past the header, in the pixel data
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return super().write(data)

    with pytest.raises(OSError) as err:
        pydicom.dcmwrite(FullDisk(), ds)
    assert '\n' in str(err.value)  # pydicom's wrapping, which a plain str(err) would print
    line = fsutil.describe_os_error(err.value, path='out/IM0001.dcm')
    assert line == 'out/IM0001.dcm: No space left on device (the disk or quota is full)'


def test_guarded_prints_one_line_and_exits_2(capsys):

    def fails(exception):
        raise exception

    for exception, expected in ((MRSRUserError('a.dcm: bad\nsecond line'), 'tool: error: a.dcm: bad'),
                                (FileNotFoundError(errno.ENOENT, 'No such file or directory', 'b.yml'),
                                 'tool: error: b.yml: No such file or directory')):
        with pytest.raises(SystemExit) as exit_info:
            guarded('tool', fails, exception)
        assert exit_info.value.code == 2 and capsys.readouterr().err == expected + '\n'
    with pytest.raises(SystemExit) as exit_info:
        guarded('tool', fails, KeyboardInterrupt())
    assert exit_info.value.code == 130 and capsys.readouterr().err == 'tool: interrupted\n'
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        guarded('tool', lambda: 1 / 0)
    assert guarded('tool', sys.intern, 'ok') == 'ok'
