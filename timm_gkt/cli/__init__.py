"""The commands: flags and configs, preflight (everything that can fail, before compute), the error boundary,
and what happens after the stages (results, export, card, push). ``timm_gkt.train``, ``timm_gkt.scan`` and
``timm_gkt.push`` are its entry points. Nothing outside this room imports it.
"""
from .._lazy import lazy_names, names_of

_LAZY = names_of({
    '.config': ('TransferConfig', 'parse_args'),
    '.preflight': ('Plan', 'describe_plan', 'preflight'),
    '.boundary': ('guarded',),
})
__getattr__ = lazy_names(__name__, _LAZY)
__all__ = list(_LAZY)
