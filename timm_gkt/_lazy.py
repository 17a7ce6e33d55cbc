"""Package faces that stay light: a room's ``__init__`` names its public API without importing torch.

``python -m timm_gkt.push`` and the Hub side read results and model specs without loading torch; a face
that imported every module of its room eagerly would load it for them. A face therefore imports its
torch-free modules directly and lists the rest here: each name is imported from its module the first
time it is asked for (PEP 562), and then it is an ordinary attribute of the package.
"""
from __future__ import annotations

import importlib
from typing import Callable, Mapping


def lazy_names(package: str, names: Mapping[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``package`` that imports ``name`` from ``package + names[name]``."""
    def __getattr__(name: str):
        module = names.get(name)
        if module is None:
            raise AttributeError(f'module {package!r} has no attribute {name!r}')
        return getattr(importlib.import_module(module, package), name)
    return __getattr__


def names_of(modules: Mapping[str, tuple[str, ...]]) -> dict[str, str]:
    """``{'.load': ('load_model', ...)}`` -> ``{'load_model': '.load', ...}``."""
    return {name: module for module, names in modules.items() for name in names}
