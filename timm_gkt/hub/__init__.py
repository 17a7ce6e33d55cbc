"""The Hub side of timm_gkt: model cards, plots, the push gate, access checks, pushes and CI summaries.

A run folder (``output/train/<experiment>/``) holds ``results.json`` and ``export/``, a folder
in Hub layout (``config.json`` + ``model.safetensors``). The modules:

- :mod:`.card` renders ``export/README.md`` (typed ``ModelCardData``/``EvalResult`` metadata and
  a body from ``hub_cards/model_card.md``); :mod:`.plots` draws ``export/plots/*.png``;
- :mod:`.access` checks, before any training, that a token may write to the repository;
- :mod:`.publish` gates, pushes in one commit with retries (:func:`publish`, :class:`PushTarget`);
- :mod:`.summary` appends a GitHub Actions step summary.

Nothing here imports torch: ``python -m timm_gkt.push`` stays quick.
"""
from .access import LOGIN_FIX, WRITE_ROLES, PushAccessError, check_push_access, check_push_options, resolve_token
from .card import card_context, card_data, hub_dataset, render_card, student_hub_id, write_card
from .plots import GAIN_LOSS_PLOT, PER_CLASS_PLOT, PLOTS_DIR, plot_gain_loss, plot_per_class_knowledge
# the publish() function is not re-exported: ``timm_gkt.hub.publish`` stays the module (from .publish import publish)
from .publish import (
    EXIT_ERROR, EXIT_NOT_BETTER_THAN_CONTROL, EXIT_NOT_IMPROVED, EXIT_PUSHED, PUSHED_FILES, REQUIRED_FILES, Outcome,
    PushError, PushTarget, control_gate, push_export, push_gate, retry_command,
)
from .summary import step_summary, write_step_summary

__all__ = [
    'EXIT_ERROR', 'EXIT_NOT_BETTER_THAN_CONTROL', 'EXIT_NOT_IMPROVED', 'EXIT_PUSHED', 'GAIN_LOSS_PLOT', 'LOGIN_FIX',
    'PER_CLASS_PLOT', 'PLOTS_DIR', 'PUSHED_FILES', 'REQUIRED_FILES', 'WRITE_ROLES', 'Outcome', 'PushAccessError',
    'PushError', 'PushTarget', 'card_context', 'card_data', 'check_push_access', 'check_push_options', 'control_gate',
    'hub_dataset', 'plot_gain_loss', 'plot_per_class_knowledge', 'push_export', 'push_gate', 'render_card',
    'resolve_token', 'retry_command', 'step_summary', 'student_hub_id', 'write_card', 'write_step_summary',
]
