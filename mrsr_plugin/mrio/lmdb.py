"""Writing BasicSR LMDBs of lossless PNG slices (the layout ``PairedImageDataset`` and the plugin's datasets read)."""
import contextlib
import os
import shutil

from mrsr_plugin.data.mr_image import encode_png
from mrsr_plugin.errors import MRSRUserError
from mrsr_plugin.fsutil import describe_os_error


def write_file(path, data, mode='wb'):
    """Write ``data`` to ``path``; an OSError (a full disk) becomes one line naming the file."""
    try:
        with open(path, mode) as f:
            f.write(data)
    except OSError as err:
        raise MRSRUserError(describe_os_error(err, path)) from err


class LmdbImageWriter:
    """Writes PNG bytes under keys into a new LMDB with BasicSR's ``meta_info.txt`` (``key.png (h,w,c) level``).

    Errors (a full disk) are raised as one MRSRUserError line naming the LMDB; :meth:`abort` drops what was not
    committed.
    """

    def __init__(self, path, map_size, compress_level=1, batch=500):
        import lmdb
        self.path, self.compress_level, self.batch, self.count = path, compress_level, batch, 0
        self.env = self.txn = self.meta = None
        try:
            self.env = lmdb.open(path, map_size=map_size)
            self.txn = self.env.begin(write=True)
            self.meta = open(os.path.join(path, 'meta_info.txt'), 'w')
        except (lmdb.Error, OSError) as err:
            self.abort()
            raise self._error(err) from err

    def _error(self, err):
        try:
            free = f'; {shutil.disk_usage(os.path.dirname(self.path)).free / 2**20:.0f} MB free on its disk'
        except OSError:
            free = ''
        problem = describe_os_error(err) if isinstance(err, OSError) else f'{type(err).__name__}: {err}'
        return MRSRUserError(f'{self.path}: cannot write ({problem}{free})')

    def put(self, key, img):
        import lmdb
        try:
            self.txn.put(key.encode('ascii'), encode_png(img, self.compress_level))
            self.meta.write(f'{key}.png ({img.shape[0]},{img.shape[1]},1) {self.compress_level}\n')
            self.count += 1
            if self.count % self.batch == 0:
                self.txn.commit()
                self.txn = self.env.begin(write=True)
        except (lmdb.Error, OSError) as err:
            raise self._error(err) from err

    def close(self):
        import lmdb
        try:
            self.txn.commit()
            self.txn = None
            self.meta.close()
        except (lmdb.Error, OSError) as err:
            self.abort()
            raise self._error(err) from err
        self.env.close()

    def abort(self):
        """Close without committing; never raises."""
        for close in (lambda: self.txn.abort(), lambda: self.env.close(), lambda: self.meta.close()):
            with contextlib.suppress(Exception):  # already failing; the staging folder is removed anyway
                close()


def read_lmdb(path):
    """{key: PNG bytes} of a BasicSR LMDB (read-only, no lock file), e.g. to compare two preparations."""
    import lmdb
    env = lmdb.open(str(path), readonly=True, lock=False)
    try:
        with env.begin() as txn:
            return {key.decode(): value for key, value in txn.cursor()}
    finally:
        env.close()
