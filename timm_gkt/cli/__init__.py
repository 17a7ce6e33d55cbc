"""The commands: flags and configs, preflight (everything that can fail, before compute), the error boundary,
and what happens after the stages (results, export, card, push). ``timm_gkt.train``, ``timm_gkt.scan`` and
``timm_gkt.push`` are its entry points. Nothing outside this room imports it.
"""
