"""The house rules, checked on the source: rooms import only what their layer allows, no import cycle, no module
over 400 lines or function over 60, the model-spec prefixes parsed in one module, and the Hub side without torch."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / 'timm_gkt'
CODE = [PACKAGE, ROOT / 'studies']


def modules() -> dict[str, tuple[Path, bool]]:
    """Dotted name -> (file, is a package face) for the package and the research code."""
    out = {}
    for top in CODE:
        for f in top.rglob('*.py'):
            parts = list(f.relative_to(ROOT).with_suffix('').parts)
            face = parts[-1] == '__init__'
            out['.'.join(parts[:-1] if face else parts)] = (f, face)
    return out


def imports_of(name: str, file: Path, face: bool, known) -> set[str]:
    """Every module ``name`` imports, at module level or inside functions, resolved to a known module."""
    found = set()
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split('.') if face else name.split('.')[:-1]
                base = base[:len(base) - (node.level - 1)]
                target = '.'.join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ''
            candidates = [f'{target}.{a.name}' for a in node.names] + [target]
        elif isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        else:
            continue
        for t in candidates:
            while t and t not in known:
                t = t.rpartition('.')[0]
            if t and t != name:
                found.add(t)
    return found


@pytest.fixture(scope='module')
def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, file, face, known) for name, (file, face) in known.items()}


def room(module: str) -> str:
    parts = module.split('.')
    return parts[1] if len(parts) > 1 and parts[0] == 'timm_gkt' else parts[0]


@pytest.mark.parametrize('importer, forbidden', [
    ('transfer', {'cli', 'hub', 'cache'}),  # the engine is handed the cache; it never imports it
    ('models', {'data', 'transfer', 'cache', 'hub', 'cli', 'evaluation'}),
    ('data', {'transfer', 'cache', 'hub', 'cli', 'evaluation'}),
    ('evaluation', {'transfer', 'cache', 'hub', 'cli'}),
    ('cache', {'transfer', 'hub', 'cli'}),
    ('report', {'transfer', 'cache', 'hub', 'cli', 'data', 'evaluation'}),
    ('hub', {'transfer.engine', 'transfer.tasks', 'cache', 'cli', 'data', 'evaluation'}),
])
def test_each_room_imports_only_what_its_layer_allows(graph, importer, forbidden):
    crossing = sorted(f'{m} -> {t}' for m, targets in graph.items() if m.startswith('timm_gkt.') and
                      room(m) == importer for t in targets
                      if t.startswith('timm_gkt.') and any(t == f'timm_gkt.{f}' or t.startswith(f'timm_gkt.{f}.')
                                                            for f in forbidden))
    assert crossing == []


def test_research_code_uses_the_package_faces_only(graph):
    """Studies import a room's face (``timm_gkt.models``), not its modules, and never through sys.path."""
    deep = sorted(f'{m} -> {t}' for m, targets in graph.items() if m.startswith('studies') for t in targets
                  if t.startswith('timm_gkt.') and t.count('.') > 1 and t != 'timm_gkt.train')
    assert deep == []
    assert not [f for f in (ROOT / 'studies').rglob('*.py') if 'sys.path' in f.read_text()]


def test_no_import_cycle(graph):
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))
    for v in list(graph):
        if v not in index:
            visit(v)
    assert cycles == []


def test_no_module_over_400_lines_and_no_function_over_60():
    long_modules, long_functions = [], []
    for top in CODE:
        for f in top.rglob('*.py'):
            text = f.read_text()
            if len(text.splitlines()) > 400:
                long_modules.append(str(f.relative_to(ROOT)))
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                    long_functions.append(f'{f.relative_to(ROOT)}:{node.name}')
    assert long_modules == [] and long_functions == []


def test_only_the_spec_module_parses_the_prefixes():
    parsers = []
    for f in PACKAGE.rglob('*.py'):
        if f.name == 'spec.py':
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            # prefix handling: startswith/partition/slicing on 'hf-hub:' or 'local-dir:' literals
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    node.func.attr in ('startswith', 'removeprefix', 'partition') and node.args:
                literals = [a for a in ast.walk(node.args[0]) if isinstance(a, ast.Constant)]
                if any(isinstance(c.value, str) and c.value.rstrip(':') in ('hf-hub', 'local-dir') for c in literals):
                    parsers.append(f'{f.relative_to(ROOT)}:{node.lineno}')
    assert parsers == []


def test_the_hub_side_and_the_report_load_without_torch():
    code = ('import sys; import timm_gkt.hub, timm_gkt.report, timm_gkt.cli.push, timm_gkt.models.spec; '
            'import timm_gkt.transfer.methods; print("torch" in sys.modules)')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == 'False'
