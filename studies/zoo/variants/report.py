"""The objectives study's report: the selection on the validation split, the decision, and (after a go) the
confirmation on the test split, from the records; the README section between the objectives markers."""
from __future__ import annotations

import json
from pathlib import Path

from timm_gkt.report import mean

from ..recipe import RUNS_DIR as FIRST_RUNS, ROOT
from ..report import write_readme_section
from ..summary import method_summary, minus_control

BEGIN, END = '<!-- objectives:begin -->', '<!-- objectives:end -->'


def confirmation(records: list[dict], chosen: str | None) -> dict | None:
    """The chosen variant on the 56 pairs (test split) beside the paper's KL+DP, each minus the committed CE
    control of its student; intervals resample students."""
    if not chosen:
        return None
    runs = {(r['student'], r['teachers'][0]): r['results'] for r in records
            if r['kind'] == 'pair' and r['method'] == chosen}
    if not runs:
        return None
    controls = {p.stem.split('__')[0]: json.loads(p.read_text())['results'] for p in FIRST_RUNS.glob('*__ce.json')}
    committed = [json.loads(p.read_text()) for p in FIRST_RUNS.glob('*__kldp.json')]  # each record read once
    paper = {(r['student'], r['teachers'][0]): r['results'] for r in committed if r['kind'] == 'pair'}
    out = {}
    for name, method_runs in ((chosen, runs), ('kldp', {k: paper[k] for k in runs if k in paper})):
        keys = sorted(k for k in method_runs if k[0] in controls)
        out[name] = {**method_summary([method_runs[k] for k in keys], [s for s, _ in keys]),
                     'minus_ce': minus_control(method_runs, controls)}
    return out


def markdown(table: dict, decision: dict | None, confirmed: dict | None) -> str:
    lines = ['**Transfer objectives beyond the paper** ([plan](studies/zoo/variants/PLAN.md), '
             '[records](studies/zoo/variants/)): each judged by its mean (variant − the student\'s CE control) over '
             '8 pairs, one per student, on the validation split (the last 5,000 training images, which the transfer '
             'does not train on but the first zoo\'s models saw when they were built; one image = 0.02 points).', '',
             '| condition | mean Δtransf | minus CE control | pairs above the control |', '|---|---:|---:|---:|']
    for name, c in table['conditions'].items():
        if c['pairs']:
            above = sum(r['minus_ce'] > 0 for r in c['pairs'].values())
            lines.append(f"| {name} | {c['mean_delta']:+.2f} | {c['mean_minus_ce']:+.2f} | {above} of "
                         f"{len(c['pairs'])} |")
    ce = table['ce']
    if ce:
        lines.append(f"\nThe CE control on the same split gained {mean([v['delta'] for v in ce.values()]):+.2f} "
                     f"points on average ({len(ce)} students).")
    if decision is None:
        lines.append('\nThe selection is not complete yet; no decision.')
    elif not decision['go']:
        lines.append(f"\n**No go** (the plan's rule): no variant's mean is above the CE control's (best: "
                     f"{decision['best']}, {decision['mean_minus_ce'][decision['best']]:+.2f}). The study stops at "
                     f"the selection, as planned; on this zoo none of these objectives beats more training.")
    else:
        chosen = decision['chosen']
        done = confirmed[chosen]['n'] if confirmed else 0
        lines.append(f"\n**Go**: {chosen} is chosen ({decision['mean_minus_ce'][chosen]:+.2f} above the CE control on "
                     f"validation, a margin of a few images per pair) and goes to the confirmation on the 56 pairs of "
                     f"the test split: {done} of 56 run" + (" so far; no verdict before all 56." if done < 56 else "."))
        if done >= 56:
            m = confirmed[chosen]['minus_ce']
            lines.append(f"\n**Verdict:** {chosen} minus the CE control is {m['mean']:+.2f} points "
                         f"[{m['ci'][0]:+.2f}, {m['ci'][1]:+.2f}] (student-clustered 95 % interval) on the test split: "
                         + ("it beats more training on this zoo." if m['ci'][0] > 0 else
                            "the interval does not exclude 0, so it does not beat more training on this zoo."
                            if m['ci'][1] > 0 else "it is below more training on this zoo."))
    if confirmed:
        lines += ['', '| method (test split) | pairs | success rate [Wilson] [student-clustered] | mean Δ [clustered] | '
                  'significant gains / losses | minus CE control [clustered] |', '|---|---:|---:|---:|---:|---:|']
        for name, s in confirmed.items():
            cl = s.get('success_ci_clustered') or [float('nan')] * 2
            m = s['minus_ce']
            lines.append(f"| {name} | {s['n']} | {s['success_rate']:.0f}% [{s['success_ci'][0]:.0f}, "
                         f"{s['success_ci'][1]:.0f}] [{cl[0]:.0f}, {cl[1]:.0f}] | {s['mean_delta']:+.2f} "
                         f"[{s['mean_delta_ci'][0]:+.2f}, {s['mean_delta_ci'][1]:+.2f}] | {s['significant_gain_pairs']} / "
                         f"{s['significant_loss_pairs']} | {m['mean']:+.2f} [{m['ci'][0]:+.2f}, {m['ci'][1]:+.2f}] |")
    return '\n'.join(lines)


def write_section(text: str, readme: Path = ROOT / 'README.md') -> None:
    write_readme_section(readme, text, BEGIN, END)
