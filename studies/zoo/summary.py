"""The zoo study's numbers, computed from the run records (studies/zoo/runs/*.json): per method the success
rate, mean Δtransf with student-clustered intervals and significant losses/gains; each method minus the CE control;
knowledge and routing; sequential runs against the best single teacher and the budget-matched control."""
from __future__ import annotations

import json
from pathlib import Path

from timm_gkt.report import SIGNIFICANCE, bootstrap_mean_ci, mean, wilson_interval

from .recipe import PAIR_METHODS as _PAIR_FLAGS

PAIR_METHODS = tuple(_PAIR_FLAGS)
MIN_STUDENTS = 5  # a cluster bootstrap over fewer students gives intervals too narrow to decide on


def load_records(runs_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(Path(runs_dir).glob('*.json'))]


def _significant(r: dict, sign: int) -> bool:
    return r['p_value'] < SIGNIFICANCE and sign * r['transfer_delta'] > 0


def method_summary(results: list[dict], clusters: list[str] | None = None) -> dict:
    """Success rate (Δ > 0) with a Wilson interval, mean Δ with a bootstrap interval, significant shares."""
    n = len(results)
    deltas = [r['transfer_delta'] for r in results]
    wins = sum(d > 0 for d in deltas)
    lo, hi = wilson_interval(wins, n)
    mlo, mhi = bootstrap_mean_ci(deltas, clusters)
    return {
        'n': n,
        'students': len(set(clusters)) if clusters is not None else n,
        'successes': wins,
        'success_rate': 100.0 * wins / n if n else float('nan'),
        'success_ci': [100.0 * lo, 100.0 * hi],
        # pairs that share a student are not independent: the rate's interval resampling whole students
        'success_ci_clustered': list(bootstrap_mean_ci([100.0 * (d > 0) for d in deltas], clusters))
        if clusters is not None and n else None,
        'mean_delta': mean(deltas),
        'mean_delta_ci': [mlo, mhi],
        'significant_loss_pairs': sum(_significant(r, -1) for r in results),
        'significant_losses': 100.0 * sum(_significant(r, -1) for r in results) / n if n else float('nan'),
        'significant_gain_pairs': sum(_significant(r, +1) for r in results),
        'significant_gains': 100.0 * sum(_significant(r, +1) for r in results) / n if n else float('nan'),
        'mean_pos_flips_delta': mean([r['teachers'][0]['pos_flips_delta'] for r in results if r.get('teachers')]),
        'mean_neg_flips_delta': mean([r['teachers'][0]['neg_flips_delta'] for r in results if r.get('teachers')]),
    }


def summarize(records: list[dict], start_scan: dict | None = None, ce_scan: dict | None = None) -> dict:
    """Every number of the report, as one JSON-able object.

    ``start_scan`` / ``ce_scan``: the ``students`` of ``scan_test.json`` and ``scan_ce_test.json`` (each zoo
    student, and each student's CE control, against the other seven on the test split); with them the CE
    control gets its Δρpos / Δρneg per pair, and each method its Δρpos minus the control's."""
    pairs = {}
    controls = {}
    sequential = {}
    chains = {}
    for rec in records:
        if rec['kind'] == 'pair':
            pairs.setdefault(rec['method'], {})[(rec['student'], rec['teachers'][0])] = rec['results']
        elif rec['kind'] == 'control':
            controls[rec['student']] = rec['results']
        elif rec['kind'] == 'sequential':
            sequential[(rec['student'], len(rec['teachers']))] = rec
        elif rec['kind'] == 'sequential-control':  # S__ce-xK: the CE control continued to K budgets
            chains[(rec['student'], int(rec['run'].rsplit('-x', 1)[1]))] = rec['results']
    all_pairs = sorted({k for m in pairs.values() for k in m})
    out = {'pairs': len(all_pairs), 'students': sorted({s for s, _ in all_pairs} | set(controls)), 'methods': {}}
    for method in PAIR_METHODS:
        runs = pairs.get(method, {})
        keys = sorted(runs)
        if keys:
            out['methods'][method] = method_summary([runs[k] for k in keys], [s for s, _ in keys])
    if controls:
        keys = sorted(controls)
        out['methods']['ce'] = method_summary([controls[k] for k in keys])
        out['methods']['ce']['per_student'] = {s: controls[s]['transfer_delta'] for s in keys}
    out['kldp_minus_ce'] = minus_control(pairs.get('kldp', {}), controls)
    out['kldp_unsup_minus_ce'] = minus_control(pairs.get('kldp-unsup', {}), controls)
    out['per_student'] = _per_student(pairs, controls)
    out['routing'] = _routing(pairs)
    # a chain's Δ from the zoo model: its last link's top-1 minus the CE control's start (the same test images)
    same_budget = {(s, k): r['top1_after'] - controls[s]['top1_before'] for (s, k), r in chains.items()
                   if s in controls}
    out['sequential'] = _sequential(sequential, pairs.get('kldp', {}), controls, same_budget)
    out['by_teacher_strength'] = _by_teacher_strength(pairs)
    timed = [rec for rec in records if rec.get('wall_seconds') is not None]
    if timed:  # what the runs cost: their wall times summed (each run one process at `threads` threads)
        out['compute'] = {'runs': len(timed), 'hours': sum(rec['wall_seconds'] for rec in timed) / 3600,
                          'threads': sorted({rec.get('threads') for rec in timed if rec.get('threads')})}
    if start_scan and ce_scan and 'ce' in out['methods']:
        ce_knowledge = _control_knowledge(start_scan, ce_scan)
        out['methods']['ce']['mean_pos_flips_delta'] = mean([pos for pos, _ in ce_knowledge.values()])
        out['methods']['ce']['mean_neg_flips_delta'] = mean([neg for _, neg in ce_knowledge.values()])
        out['knowledge_minus_ce'] = {m: _knowledge_minus_control(runs, ce_knowledge, by_teacher_strength=True)
                                     for m, runs in pairs.items() if m in PAIR_METHODS}
    return out


def _control_knowledge(start_scan: dict, ce_scan: dict) -> dict:
    """(student, teacher) -> (Δρpos, Δρneg) of the student's CE control: the teacher's complementary knowledge
    (ρpos: teacher right, student wrong) and the student's own (ρneg) that more training alone moves."""
    out = {}
    for s, entry in ce_scan.items():
        for t, after in entry['teachers'].items():
            before = start_scan[s]['teachers'][t]
            out[(s, t)] = (after['rho_pos'] - before['rho_pos'], after['rho_neg'] - before['rho_neg'])
    return out


def _knowledge_minus_control(runs: dict, ce_knowledge: dict, by_teacher_strength: bool = False) -> dict | None:
    """A method's Δρpos and Δρneg minus the CE control's on the same pair, interval by resampling students: the
    teacher's knowledge the teacher term moved beyond what more training moves; also for teachers weaker and
    stronger than the student (test top-1, as _by_teacher_strength)."""
    keys = sorted(k for k in runs if k in ce_knowledge)
    if not keys:
        return None
    out = {'n': len(keys), 'students': len({s for s, _ in keys})}
    for i, (name, field) in enumerate((('rho_pos', 'pos_flips_delta'), ('rho_neg', 'neg_flips_delta'))):
        diffs = [runs[k]['teachers'][0][field] - ce_knowledge[k][i] for k in keys]
        lo, hi = bootstrap_mean_ci(diffs, [s for s, _ in keys])
        out[name] = {'mean': mean(diffs), 'ci': [lo, hi], 'negative': sum(d < 0 for d in diffs)}
    if by_teacher_strength:
        def side(weaker: bool) -> dict | None:
            return _knowledge_minus_control({k: r for k, r in runs.items()
                                             if (r['teachers'][0]['top1'] < r['top1_before']) == weaker}, ce_knowledge)
        out['by_teacher_strength'] = {'weaker_teacher': side(True), 'stronger_teacher': side(False)}
    return out


def minus_control(runs: dict, controls: dict, control_of=lambda key: key[0]) -> dict | None:
    """Δ(method) − Δ(the CE control of the same student), over the runs keyed (student, ...); ``control_of`` maps a
    run's key to its control's key (the student, or the student and seed). The interval resamples students: pairs
    that share a student share its control."""
    keys = sorted(k for k in runs if control_of(k) in controls)
    if not keys:
        return None
    diffs = [runs[k]['transfer_delta'] - controls[control_of(k)]['transfer_delta'] for k in keys]
    lo, hi = bootstrap_mean_ci(diffs, [k[0] for k in keys])
    return {'n': len(diffs), 'students': len({k[0] for k in keys}), 'mean': mean(diffs), 'ci': [lo, hi],
            'positive': sum(d > 0 for d in diffs)}


def _per_student(pairs: dict, controls: dict) -> dict:
    table = {}
    students = sorted({s for m in pairs.values() for s, _ in m} | set(controls))
    for s in students:
        row = {}
        for method, runs in pairs.items():
            deltas = [r['transfer_delta'] for (st, _), r in runs.items() if st == s]
            if deltas:
                row[method] = mean(deltas)
        if s in controls:
            row['ce'] = controls[s]['transfer_delta']
            row['top1'] = controls[s]['top1_before']
        else:
            any_run = next((r for m in pairs.values() for (st, _), r in m.items() if st == s), None)
            row['top1'] = any_run['top1_before'] if any_run else None
        table[s] = row
    return table


def _routing(pairs: dict) -> dict:
    """Share of the training samples routed to the teacher, overall and among positive / negative flips."""
    out = {}
    for method in ('kldp', 'kldp-unsup'):
        runs = list(pairs.get(method, {}).values())
        if not runs:
            continue
        t = [r['teachers'][0] for r in runs]
        entry = {'routed': mean([x['routed_share'] for x in t if x.get('routed_share') is not None])}
        for key in ('routed_pos_flips', 'routed_neg_flips'):
            vals = [x[key] for x in t if x.get(key) is not None]
            entry[key] = mean(vals) if vals else None
        out[method] = entry
    return out


def _sequential(sequential: dict, single: dict, controls: dict | None = None,
                same_budget: dict | None = None) -> dict | None:
    """Sequential KL+DP with 2 and 3 teachers vs the best single KL+DP teacher among those used (the paper's
    claim), and against the student's CE control: at one budget, and continued to as many budgets as the
    sequential run trains (one per teacher; ``same_budget``: (student, k) -> Δ from the zoo model)."""
    controls, same_budget = controls or {}, same_budget or {}
    if not sequential:
        return None
    rows = []
    for (student, k), rec in sorted(sequential.items()):
        singles = [single[(student, t)]['transfer_delta'] for t in rec['teachers'] if (student, t) in single]
        rows.append({'student': student, 'teachers': rec['teachers'], 'k': k,
                     'delta': rec['results']['transfer_delta'], 'p_value': rec['results']['p_value'],
                     'best_single': max(singles) if len(singles) == k else None,
                     'ce': controls[student]['transfer_delta'] if student in controls else None,
                     'ce_same_budget': same_budget.get((student, k))})
    summary = {}
    for k in (2, 3):
        sel = [r for r in rows if r['k'] == k and r['best_single'] is not None]
        if sel:
            diffs = [r['delta'] - r['best_single'] for r in sel]
            summary[f'seq{k}'] = {'n': len(sel), 'mean_delta': mean([r['delta'] for r in sel]),
                                  'mean_best_single': mean([r['best_single'] for r in sel]),
                                  'beats_best_single': sum(d > 0 for d in diffs),
                                  'mean_minus_best_single': mean(diffs),
                                  'ci': list(bootstrap_mean_ci(diffs))}
            with_ce = [r for r in sel if r['ce'] is not None]
            if with_ce:
                minus_ce = [r['delta'] - r['ce'] for r in with_ce]
                summary[f'seq{k}'].update(mean_ce=mean([r['ce'] for r in with_ce]), minus_ce=mean(minus_ce),
                                          minus_ce_ci=list(bootstrap_mean_ci(minus_ce)), minus_ce_n=len(with_ce))
            matched = [r for r in sel if r['ce_same_budget'] is not None]
            if matched:
                diffs = [r['delta'] - r['ce_same_budget'] for r in matched]
                summary[f'seq{k}'].update(minus_ce_same_budget=mean(diffs), minus_ce_same_budget_n=len(matched),
                                          minus_ce_same_budget_ci=list(bootstrap_mean_ci(diffs)),
                                          above_ce_same_budget=sum(d > 0 for d in diffs))
    return {'rows': rows, 'summary': summary}


def _by_teacher_strength(pairs: dict) -> dict:
    """Mean Δ per method for teachers weaker / stronger than the student (by test top-1)."""
    out = {}
    for method, runs in pairs.items():
        weaker = [r['transfer_delta'] for r in runs.values() if r['teachers'][0]['top1'] < r['top1_before']]
        stronger = [r['transfer_delta'] for r in runs.values() if r['teachers'][0]['top1'] >= r['top1_before']]
        out[method] = {'weaker_teacher': {'n': len(weaker), 'mean_delta': mean(weaker)},
                       'stronger_teacher': {'n': len(stronger), 'mean_delta': mean(stronger)}}
    return out


# ----------------------------------------------------------------------------- plots
