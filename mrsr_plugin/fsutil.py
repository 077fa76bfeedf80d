"""Outputs that never look complete before they are: build in a hidden sibling folder, then rename.

Staging folders are named ``<prefix><pid>@<host>@<random>``. One whose process is gone (same host, no such pid) is
the leftover of an interrupted run; the next run that stages into the same folder under the same prefix removes
it, since it may hold patient data. Staging folders of other hosts (shared storage) are left alone; those of older
versions, without an owner in the name, are removed once a day old.
"""
import contextlib
import errno
import os
import shutil
import socket
import tempfile
import time
import zipfile

from mrsr_plugin.errors import innermost_os_error

LEGACY_MAX_AGE_S = 24 * 3600  # staging folders without an owner in their name are removed after this


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _is_stale(path, prefix):
    owner = os.path.basename(path)[len(prefix):].split('@')
    if len(owner) >= 3 and owner[0].isdigit():
        return owner[1] == socket.gethostname() and not _alive(int(owner[0]))
    try:
        return time.time() - os.lstat(path).st_mtime > LEGACY_MAX_AGE_S
    except OSError:
        return False


def remove_stale(parent, prefix):
    """Remove the staging folders ``parent/<prefix>*`` of interrupted runs (see the module docstring); returns
    their paths."""
    try:
        names = sorted(os.listdir(parent))
    except OSError:
        return []
    removed = []
    for name in names:
        path = os.path.join(parent, name)
        if name.startswith(prefix) and os.path.isdir(path) and not os.path.islink(path) and _is_stale(path, prefix):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def make_staging(parent, prefix):
    """A new hidden folder ``parent/<prefix><pid>@<host>@<random>``, after removing stale ones of the same prefix."""
    remove_stale(parent, prefix)
    return tempfile.mkdtemp(prefix=f'{prefix}{os.getpid()}@{socket.gethostname()}@', dir=parent)


@contextlib.contextmanager
def staged_saves(folder):
    """Save files into a hidden staging folder in ``folder`` (``.saving-*``); on leaving without an error, every
    staged file that is a complete torch.save zip (its central directory is written last) replaces its namesake in
    ``folder``, the rest are dropped. The staging folder goes whatever happens.

    Yields:
        tuple[str, list[str]]: The staging folder, and the list that receives the names moved into ``folder``.
    """
    staging, moved = make_staging(folder, '.saving-'), []  # also removes those of killed runs
    try:
        yield staging, moved
        for name in sorted(os.listdir(staging)):
            if zipfile.is_zipfile(os.path.join(staging, name)):
                os.replace(os.path.join(staging, name), os.path.join(folder, name))
                moved.append(name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_atomically(output, name, overwrite, write):
    """Run ``write(folder)`` on a hidden temporary folder in ``output`` and rename it to ``output/name``.

    Whatever happens in ``write``, the temporary folder is removed unless it became ``output/name``; leftovers of a
    killed run (``.<name>.partial-*``, ``.<name>.old-*``) are removed by the next call for the same name.
    """
    final = os.path.join(output, name)
    remove_stale(output, f'.{name}.old-')
    tmp = make_staging(output, f'.{name}.partial-')
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700 would make the result private
        write(tmp)
        if os.path.exists(final) and overwrite:
            trash = make_staging(output, f'.{name}.old-')
            os.replace(final, os.path.join(trash, 'old'))
            os.replace(tmp, final)
            shutil.rmtree(trash)
        else:
            os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def replace_file(path, text):
    """Write ``text`` (str, or bytes) to ``path`` through a hidden temporary file renamed over it: readers see the
    old file or the new one, never half of one."""
    folder, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f'.{name}.', dir=folder)
    try:
        with os.fdopen(fd, 'wb' if isinstance(text, bytes) else 'w') as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask():
    umask = os.umask(0)
    os.umask(umask)
    return umask


def describe_os_error(err, path=None):
    """One line for an OSError: ``file: problem``, from the innermost OSError that carries an errno, since some
    libraries re-raise it with their traceback in the message (pydicom's writer does). ``path`` names the file
    where the error does not."""
    inner = innermost_os_error(err) or err
    problem = getattr(inner, 'strerror', None) or (str(inner).strip().splitlines() or [type(inner).__name__])[0]
    if getattr(inner, 'errno', None) in (errno.ENOSPC, errno.EDQUOT):
        problem += ' (the disk or quota is full)'
    where = getattr(inner, 'filename', None) or path
    return f'{where}: {problem}' if where else problem
