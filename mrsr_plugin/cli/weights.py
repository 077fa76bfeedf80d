"""``mrsr-weights [NAME ...]``: the manifest's names, or their model cards."""
import argparse
import os

from mrsr_plugin.checkpoint import read, summary
from mrsr_plugin.cli.common import guarded
from mrsr_plugin.errors import MRSRUserError
from mrsr_plugin.weights import (DEFAULT_MANIFEST, NO_INFO, cache_dir, cached_file, load_manifest, load_pretrained,
                                 local_path, manifest_path, model_card, pretrained_card)


def main(argv=None):
    p = argparse.ArgumentParser(prog='mrsr-weights',
                                description='List the named generator weights, or print their model cards.')
    p.add_argument('names', nargs='*', help='print the model cards of these entries (default: list the names)')
    p.add_argument('--manifest', help=f'manifest file (default: $MRSR_WEIGHTS_MANIFEST, else {DEFAULT_MANIFEST})')
    args = p.parse_args(argv)
    manifest = args.manifest or manifest_path()
    entries, pretrained, infos = guarded('mrsr-weights', _load, args.names, manifest)
    if args.names:
        print('\n'.join(model_card(n, entries[n], infos[n]) if n in entries else pretrained_card(n, pretrained[n])
                        for n in args.names))
    else:
        print(f'{manifest}: {len(entries)} entries; cache folder {cache_dir()}')
        for name, info in sorted(infos.items()):
            print(f'  {name}: {summary(info) if info else NO_INFO[info is None]}')
        print(f'{DEFAULT_MANIFEST}: {len(pretrained)} pretrained networks of losses and metrics')
        for name, entry in sorted(pretrained.items()):
            state = 'present' if os.path.isfile(cached_file(name, entry)) else f'missing (run {entry["fetch"]})'
            print(f'  {name}: {state}')


def _load(names, manifest):
    """(manifest entries, pretrained entries, {name: :func:`_info`}) of ``names`` (default: every entry)."""
    entries, pretrained = load_manifest(manifest), load_pretrained()
    unknown = [n for n in names if n not in entries and n not in pretrained]
    if unknown:
        raise MRSRUserError(f'{", ".join(unknown)}: not in {manifest} (known names: '
                            f'{", ".join(sorted(entries) + sorted(pretrained)) or "none"})')
    return entries, pretrained, {n: _info(n, entries[n], manifest) for n in names or entries if n in entries}


def _info(name, entry, manifest):
    """The mrsr block of an entry's checkpoint where the file is here (downloading nothing): {} for a file without
    one, None where the file is not here."""
    path = local_path(name, entry, manifest)
    return (read(path)[1] or {}) if os.path.isfile(path) else None


if __name__ == '__main__':
    main()
