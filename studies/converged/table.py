"""The converged zoo's README table, from ``zoo/converged/index.json``'s models (``build --markdown``)."""
from __future__ import annotations


def markdown_table(models: list[dict]) -> str:
    lines = ['| name | family | architecture | params | input (C×H×W) | recipe | clean train loss / top-1 | test top-1 '
             '| (a) loss stopped | (b) CE check: round, Δ (p) | converged |',
             '|---|---|---|---:|---|---|---:|---:|---|---|---|']
    for m in models:
        rc, conv = m['recipe'], m['convergence']
        passed = conv['check_passed_in_round']
        check = next((r for r in m['check_rounds'] if r['round'] == passed), m['check_rounds'][-1] if
                     m['check_rounds'] else None)
        check_text = '–' if check is None else f"{check['round']}, {check['delta']:+.2f} (p = {check['p_value']:.2g})"
        lines.append(
            f"| {m['name']} | {m['family']} | `{m['architecture']}` | {m['parameters'] / 1e6:.2f} M | "
            f"{'×'.join(str(v) for v in m['input_size'])} | {rc['opt']} lr {rc['lr']:g}, {rc['epochs']} ep | "
            f"{m['clean_train_loss']:.3f} / {m['clean_train_top1']:.2f} | {m['test_top1']:.2f} | "
            f"{'yes' if conv['loss_stopped_falling'] else 'no'} | {check_text} | "
            f"{'yes' if conv['converged'] else 'no'} |")
    return '\n'.join(lines)
