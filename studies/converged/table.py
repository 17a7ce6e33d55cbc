"""The converged zoo's README table, from ``zoo/converged/index.json``'s models (``build --markdown``)."""
from __future__ import annotations


def check_text(rounds: list[dict], passed: int | None) -> str:
    """Every check round's test Δ in order, the passing one with its McNemar p: '4: +0.13, -0.24, +0.11, -0.06
    (p = 0.49)' (a failed round's result became the model the next round checked)."""
    if not rounds:
        return '–'
    last = next((r for r in rounds if r['round'] == passed), rounds[-1])
    deltas = ', '.join(f"{r['delta']:+.2f}" for r in rounds if r['round'] <= last['round'])
    return f"{last['round']}: {deltas} (p = {last['p_value']:.2g})"


def markdown_table(models: list[dict]) -> str:
    lines = ['| name | family | architecture | params | input (C×H×W) | recipe | clean train loss / top-1 | test top-1 '
             '| (a) loss stopped | (b) CE checks: rounds, Δ each (p of the last) | converged |',
             '|---|---|---|---:|---|---|---:|---:|---|---|---|']
    for m in models:
        rc, conv = m['recipe'], m['convergence']
        ext = m.get('extensions', 0)
        recipe = f"{rc['opt']} lr {rc['lr']:g}, {rc['epochs']} ep" + (f' + {ext} extension{"s" * (ext > 1)}' if ext else '')
        lines.append(
            f"| {m['name']} | {m['family']} | `{m['architecture']}` | {m['parameters'] / 1e6:.2f} M | "
            f"{'×'.join(str(v) for v in m['input_size'])} | {recipe} | "
            f"{m['clean_train_loss']:.3f} / {m['clean_train_top1']:.2f} | {m['test_top1']:.2f} | "
            f"{'yes' if conv['loss_stopped_falling'] else 'no'} | {check_text(m['check_rounds'], conv['check_passed_in_round'])} | "
            f"{'yes' if conv['converged'] else 'no'} |")
    return '\n'.join(lines)
