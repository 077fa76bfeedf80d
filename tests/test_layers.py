"""The package's layers point one way (docs/layout.md): the plugin core, then MR I/O (mrio/), then the applications
(apps/), then the command lines (cli/ and the BasicSR entry points train.py and test.py). Every import of a package
module, at the top of a file or inside a function, goes to its own layer or one below."""
import ast
import os

from conftest import REPO

PACKAGE = os.path.join(REPO, 'mrsr_plugin')
ENTRY_POINTS = {'mrsr_plugin.train', 'mrsr_plugin.test'}


def layer(module):
    """0 core, 1 MR I/O, 2 applications, 3 command lines."""
    part = module.split('.')[1] if '.' in module else ''
    if part == 'cli' or module in ENTRY_POINTS:
        return 3
    return {'apps': 2, 'mrio': 1}.get(part, 0)


def package_modules():
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith('.py'):
                path = os.path.join(folder, name)
                module = os.path.relpath(path[:-3], REPO).replace(os.sep, '.').removesuffix('.__init__')
                yield module, path


def imported_modules(path, known):
    """The package modules that ``path`` imports (``from a import b`` counts a.b where that is a module)."""
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f'{node.module}.{alias.name}' for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        yield from (name for name in names if name in known)


def test_no_module_imports_a_layer_above_its_own():
    modules = dict(package_modules())
    assert len(modules) > 50 and 'mrsr_plugin.apps.selfcheck' in modules and 'mrsr_plugin.cli.infer' in modules
    upward = [f'{module} (layer {layer(module)}) imports {target} (layer {layer(target)})'
              for module, path in modules.items() for target in imported_modules(path, modules)
              if layer(target) > layer(module)]
    assert upward == []


def test_the_rule_sees_imports_inside_functions(tmp_path):
    source = tmp_path / 'm.py'
    source.write_text('def f():\n    from mrsr_plugin.cli import infer\n    import mrsr_plugin.apps.selfcheck\n')
    known = {'mrsr_plugin.cli', 'mrsr_plugin.cli.infer', 'mrsr_plugin.apps.selfcheck'}
    assert sorted(imported_modules(str(source), known)) == ['mrsr_plugin.apps.selfcheck', 'mrsr_plugin.cli',
                                                            'mrsr_plugin.cli.infer']
    assert [layer(m) for m in ('mrsr_plugin.archs.mrdab_arch', 'mrsr_plugin.mrio.dicom', 'mrsr_plugin.apps.prepare',
                               'mrsr_plugin.cli.infer', 'mrsr_plugin.train')] == [0, 1, 2, 3, 3]
