"""Outputs that never look complete before they are: build in a hidden sibling folder, then rename."""
import os
import shutil
import tempfile


def write_atomically(output, name, overwrite, write):
    """Run ``write(folder)`` on a hidden temporary folder in ``output`` and rename it to ``output/name``."""
    final = os.path.join(output, name)
    tmp = tempfile.mkdtemp(prefix=f'.{name}.partial-', dir=output)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would make the result private
        write(tmp)
        if os.path.exists(final) and overwrite:
            trash = tempfile.mkdtemp(prefix=f'.{name}.old-', dir=output)
            os.replace(final, os.path.join(trash, 'old'))
            os.replace(tmp, final)
            shutil.rmtree(trash)
        else:
            os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
