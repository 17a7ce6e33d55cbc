"""The model card's plots: per-class complementary knowledge, knowledge gain and loss per epoch.

Each plot function returns the PNG path, or None when the results hold no data for it.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..report.results import num, pct, teacher_name

PLOTS_DIR = 'plots'
PER_CLASS_PLOT = 'per_class_knowledge.png'
GAIN_LOSS_PLOT = 'gain_loss.png'


def _figure(width: float, height: float):
    # a Figure with its own Agg canvas: no pyplot, no global backend switch inside someone else's process
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format='png', metadata={'Software': None})  # no version stamp: same run, same bytes
    return path


def plot_per_class_knowledge(results: dict, path: str | os.PathLike) -> Path | None:
    """Per teacher, the per-class positive-flip rate before vs after transfer; None when no teacher has the data."""
    teachers = [t for t in results.get('teachers') or []
                if t.get('per_class_pos_flips_before') and t.get('per_class_pos_flips_after')
                and len(t['per_class_pos_flips_before']) == len(t['per_class_pos_flips_after'])]
    if not teachers:
        return None
    n_classes = len(teachers[0]['per_class_pos_flips_before'])
    names = list(results.get('label_names') or [])
    if len(names) != n_classes:
        names = [str(i) for i in range(n_classes)]
    fig = _figure(max(6.0, 0.55 * n_classes + 2), 2.8 * len(teachers) + 0.6)
    axes = fig.subplots(len(teachers), 1, squeeze=False)[:, 0]
    x = list(range(n_classes))
    for ax, t in zip(axes, teachers):
        before = [num(v) or 0.0 for v in t['per_class_pos_flips_before']][:n_classes]
        after = [num(v) or 0.0 for v in t['per_class_pos_flips_after']][:n_classes]
        ax.bar([i - 0.2 for i in x[:len(before)]], before, width=0.4, label='before transfer', color='#9aa5b1')
        ax.bar([i + 0.2 for i in x[:len(after)]], after, width=0.4, label='after transfer', color='#2f6fb0')
        ax.set_title(f"{teacher_name(t)}: ρpos {pct(t.get('rho_pos'))}% → {pct(t.get('rho_pos_after'))}%",
                     fontsize=10)
        ax.set_ylabel('positive flips (% of class)')
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=30, ha='right', fontsize=8)
        ax.grid(axis='y', alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle('Complementary knowledge per class (teacher right, student wrong)', fontsize=11)
    fig.tight_layout()
    return _save(fig, Path(path))


def plot_gain_loss(results: dict, path: str | os.PathLike) -> Path | None:
    """Knowledge gain and loss (and Δtransf) after every epoch, stages marked; None without epochs."""
    epochs = [e for e in results.get('epochs') or []
              if num(e.get('knowledge_gain')) is not None and num(e.get('knowledge_loss')) is not None]
    if not epochs:
        return None
    x = list(range(1, len(epochs) + 1))
    fig = _figure(7.0, 4.0)
    ax = fig.subplots()
    ax.plot(x, [num(e['knowledge_gain']) for e in epochs], 'o-', color='#2e8b57', label='knowledge gain')
    ax.plot(x, [num(e['knowledge_loss']) for e in epochs], 's-', color='#c0392b', label='knowledge loss')
    deltas = [num(e.get('transfer_delta')) for e in epochs]
    if all(d is not None for d in deltas):
        ax.plot(x, deltas, '--', color='#555555', label='Δtransf = gain − loss')
    ax.axhline(0.0, color='black', linewidth=0.6)
    _mark_stages(ax, epochs)
    ax.set_xlabel('epoch (all stages)')
    ax.set_ylabel('% of evaluation images')
    ax.set_xticks(x)
    ax.set_title('Knowledge gain and loss per epoch', fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc='best')
    fig.tight_layout()
    return _save(fig, Path(path))


def _mark_stages(ax, epochs: list[dict]) -> None:
    """Where a new stage (teacher) starts in sequential transfer: a dotted line and the teacher's name."""
    for i in range(1, len(epochs)):
        if epochs[i].get('stage') != epochs[i - 1].get('stage'):
            ax.axvline(i + 0.5, color='#999999', linestyle=':', linewidth=1)
    for i, e in enumerate(epochs):
        if i == 0 or e.get('stage') != epochs[i - 1].get('stage'):
            label = e.get('teacher')
            if label:
                ax.annotate(str(label), (i + 1, 1.0), xycoords=('data', 'axes fraction'), xytext=(2, -12),
                            textcoords='offset points', fontsize=8, color='#555555')


PLOTS = ((PER_CLASS_PLOT, plot_per_class_knowledge), (GAIN_LOSS_PLOT, plot_gain_loss))
