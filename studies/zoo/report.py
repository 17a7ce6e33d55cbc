"""The zoo study's report: from studies/zoo/runs/*.json to tables, two plots, a verdict and README text.

Used by ``python -m studies.zoo.study report``. Everything is computed from the committed run records,
so the README section can be rebuilt without training.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from timm_gkt.report.results import pvalue_text
from timm_gkt.report.stats import SIGNIFICANCE, bootstrap_mean_ci, mean, wilson_interval

PAIR_METHODS = ('kl', 'xekl', 'xekl-mcl', 'kldp', 'kldp-unsup')
TITLES = {'ce': 'CE control', 'kl': 'KL-Dist', 'xekl': 'XE-KL', 'xekl-mcl': 'XE-KL + MCL', 'kldp': 'KL+DP',
          'kldp-unsup': 'KL+DP (unsupervised)'}
BEGIN, END = '<!-- study:begin -->', '<!-- study:end -->'
MIN_STUDENTS = 5  # a cluster bootstrap over fewer students gives intervals too narrow to decide on
SUCCESS_PLOT, DELTA_PLOT = 'success_rate.png', 'delta_vs_accuracy_gap.png'


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
    out['kldp_minus_ce'] = _paired_with_control(pairs.get('kldp', {}), controls)
    out['kldp_unsup_minus_ce'] = _paired_with_control(pairs.get('kldp-unsup', {}), controls)
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


def _paired_with_control(runs: dict, controls: dict) -> dict | None:
    """Δ(method, s, t) − Δ(CE, s) over pairs, interval by resampling students (pairs share their control)."""
    keys = sorted(k for k in runs if k[0] in controls)
    if not keys:
        return None
    diffs = [runs[k]['transfer_delta'] - controls[k[0]]['transfer_delta'] for k in keys]
    lo, hi = bootstrap_mean_ci(diffs, [s for s, _ in keys])
    return {'n': len(diffs), 'students': len({s for s, _ in keys}), 'mean': mean(diffs), 'ci': [lo, hi],
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

def _figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


# METHOD.md's reference success rates (paper, 400 pairs on 10 % of ImageNet); the unsupervised variant has none.
PAPER_SUCCESS_RATES = {'kl': 32.5, 'xekl': 40.0, 'xekl-mcl': 80.0, 'kldp': 92.5}


def plot_success_rates(summary: dict, path: Path) -> Path:
    """The paper's Fig. 4a on the zoo: success rate per method with 95% Wilson intervals."""
    methods = [m for m in PAIR_METHODS if m in summary['methods']]
    fig = _figure(7.0, 3.8)
    ax = fig.subplots()
    rates = [summary['methods'][m]['success_rate'] for m in methods]
    lows = [r - summary['methods'][m]['success_ci'][0] for r, m in zip(rates, methods)]
    highs = [summary['methods'][m]['success_ci'][1] - r for r, m in zip(rates, methods)]
    ax.bar(range(len(methods)), rates, yerr=[lows, highs], capsize=4, color='#2f6fb0', label='zoo (Fashion-MNIST)')
    paper = [(i, PAPER_SUCCESS_RATES[m]) for i, m in enumerate(methods) if m in PAPER_SUCCESS_RATES]
    if paper:
        ax.scatter([i for i, _ in paper], [r for _, r in paper], marker='D', s=30, color='#e67e22', zorder=3,
                   label='paper (400 ImageNet pairs)')
        ax.legend(fontsize=8, loc='upper left')
    ax.set_xticks(range(len(methods)))
    ax.set_xticklabels([TITLES[m] for m in methods], fontsize=9)
    ax.set_ylim(0, 100)
    ax.set_ylabel('success rate (% of pairs with Δtransf > 0)')
    ax.set_title(f"Transfer success over {summary['pairs']} zoo pairs (95% Wilson intervals)", fontsize=10)
    ax.grid(axis='y', alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format='png', metadata={'Software': None})
    return path


def plot_delta_vs_gap(records: list[dict], path: Path) -> Path:
    """The paper's Fig. 4b: Δtransf against teacher minus student top-1, KL-Dist vs KL+DP."""
    fig = _figure(7.0, 4.2)
    ax = fig.subplots()
    for method, colour, marker in (('kl', '#c0392b', 'o'), ('kldp', '#2f6fb0', 's')):
        pts = [(r['results']['teachers'][0]['top1'] - r['results']['top1_before'], r['results']['transfer_delta'])
               for r in records if r['kind'] == 'pair' and r['method'] == method]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=18, alpha=0.8, color=colour, marker=marker,
                       label=TITLES[method])
    ax.axhline(0.0, color='black', linewidth=0.6)
    ax.axvline(0.0, color='#999999', linewidth=0.6, linestyle=':')
    ax.set_xlabel('teacher top-1 − student top-1 (points)')
    ax.set_ylabel('Δtransf (points)')
    ax.set_title('Transfer delta against the accuracy gap (zoo, test split)', fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format='png', metadata={'Software': None})
    return path


# ----------------------------------------------------------------------------- markdown

def _ci(ci, digits=2, signed=True):
    f = (lambda v: f'{v:+.{digits}f}') if signed else (lambda v: f'{v:.{digits - 2 if digits > 2 else 0}f}')
    return f'[{f(ci[0])}, {f(ci[1])}]'


def methods_table(summary: dict) -> str:
    lines = ['| method | pairs | success rate [95% CI] | mean Δtransf [95% CI] | significant gains | '
             'significant losses | mean Δρpos | mean Δρneg |', '|---|---:|---:|---:|---:|---:|---:|---:|']
    for m in ('ce', 'kl', 'xekl', 'xekl-mcl', 'kldp', 'kldp-unsup'):
        s = summary['methods'].get(m)
        if not s:
            continue
        n_label = f"{s['n']} students" if m == 'ce' else str(s['n'])
        lines.append(
            f"| {TITLES[m]} | {n_label} | {s['success_rate']:.0f}% [{s['success_ci'][0]:.0f}, {s['success_ci'][1]:.0f}] | "
            f"{s['mean_delta']:+.2f} {_mean_ci(s, m)} | {s['significant_gains']:.0f}% | "
            f"{s['significant_losses']:.0f}% | {_fmt(s['mean_pos_flips_delta'])} | {_fmt(s['mean_neg_flips_delta'])} |")
    return '\n'.join(lines)


def _ci_over(ci, students: int, note: str | None = None) -> str:
    """A bootstrap interval, unless it resamples fewer students than an interval can stand on (pairs of one
    student share that student's noise); then `note`, by default `(no interval: N students so far)`."""
    return _ci(ci) if students >= MIN_STUDENTS else (note or f'(no interval: {students} students so far)')


def _mean_ci(s: dict, method: str) -> str:
    """A method's mean-Δ interval (the CE control has one run per student: its interval is over students)."""
    return _ci(s['mean_delta_ci']) if method == 'ce' else _ci_over(s['mean_delta_ci'], s['students'])


def _fmt(x, digits=2):
    return '–' if x is None or (isinstance(x, float) and math.isnan(x)) else f'{x:+.{digits}f}'


def per_student_table(summary: dict) -> str:
    cols = [m for m in ('ce', 'kl', 'xekl', 'xekl-mcl', 'kldp', 'kldp-unsup') if m in summary['methods']]
    lines = ['| student (top-1) | ' + ' | '.join(TITLES[c] for c in cols) + ' |',
             '|---|' + '---:|' * len(cols)]
    for s, row in summary['per_student'].items():
        top1 = f" ({row['top1']:.2f})" if row.get('top1') is not None else ''
        lines.append(f'| {s}{top1} | ' + ' | '.join(_fmt(row.get(c)) for c in cols) + ' |')
    return '\n'.join(lines)


def sequential_table(summary: dict) -> str:
    seq = summary.get('sequential')
    if not seq:
        return ''
    lines = ['| student | teachers (by ρpos on validation) | sequential Δ (p) | best single KL+DP of those | '
             'CE control, one budget | CE control, as many budgets |', '|---|---|---:|---:|---:|---:|']
    for r in seq['rows']:
        lines.append(f"| {r['student']} | {', '.join(r['teachers'])} | "
                     f"{r['delta']:+.2f} ({pvalue_text(r['p_value'], 2)}) | "
                     f"{_fmt(r['best_single'])} | {_fmt(r.get('ce'))} | {_fmt(r.get('ce_same_budget'))} |")
    for k in (2, 3):
        x = seq['summary'].get(f'seq{k}')
        if not x:
            continue
        ci = _ci_over(x['ci'], x['n'])
        line = (f"{k} teachers in sequence, {x['n']} students: mean Δ {x['mean_delta']:+.2f} against "
                f"{x['mean_best_single']:+.2f} for the best single teacher of those (picked on the test split, "
                f"which favours it), sequential minus best single {x['mean_minus_best_single']:+.2f} {ci}, ahead in "
                f"{x['beats_best_single']} of {x['n']}")
        if 'minus_ce_same_budget' in x:
            n = x['minus_ce_same_budget_n']
            ce_ci = _ci_over(x['minus_ce_same_budget_ci'], n, '(no interval yet)')
            line += (f"; minus the CE control continued to {k} budgets {x['minus_ce_same_budget']:+.2f} {ce_ci}, "
                     f"above it in {x['above_ce_same_budget']} of {n}")
        elif 'minus_ce' in x:
            ce_ci = _ci_over(x['minus_ce_ci'], x['minus_ce_n'], '(no interval yet)')
            line += (f"; minus the CE control {x['minus_ce']:+.2f} {ce_ci}, with {k} budgets of training against "
                     f"the control's one")
        lines += ['', line + '.']
    return '\n'.join(lines)


def progress_line(counts: dict) -> str:
    """How much of the study the report stands on: {'pair runs': (done, planned), ...}."""
    if all(done == planned for done, planned in counts.values()):
        return 'The study is complete: ' + ', '.join(f'all {planned} {what}' for what, (_, planned) in counts.items()) \
            + '.'
    return 'Finished so far: ' + ', '.join(f'{done} of {planned} {what}' for what, (done, planned) in counts.items()) \
        + '.'


def verdict(summary: dict) -> list[str]:
    """The answer in words, against the targets fixed before the study (README): computed, not written by hand."""
    out = []
    k = summary['methods'].get('kldp')
    if k:
        losses = k['significant_loss_pairs']
        met = k['success_ci'][0] >= 90 and losses == 0
        out.append(f"KL+DP raised top-1 in {k['successes']} of {k['n']} pairs (significantly, McNemar p < 0.05, in "
                   f"{k['significant_gain_pairs']}), a success rate of "
                   f"{k['success_rate']:.0f}% {_ci(k['success_ci'], 0, signed=False)}, mean {k['mean_delta']:+.2f} "
                   f"points {_ci(k['mean_delta_ci'])}, with a significant loss (McNemar p < 0.05) in {losses}: the "
                   f"target (≥ 90%, no significant loss) is {'met' if met else 'not met'}.")
    d = summary.get('kldp_minus_ce')
    if d:
        lo, hi = d['ci']
        word = (f"too few students ({d['students']}) for the interval to decide anything yet"
                if d['students'] < MIN_STUDENTS else
                'above the CE control: more than more training' if lo > 0 else
                'below the CE control: less than more training' if hi < 0 else
                'not distinguishable from the CE control: no evidence that it adds anything to more training')
        out.append(f"Against the CE control of the same student (one more budget of plain cross-entropy), KL+DP is "
                   f"{d['mean']:+.2f} points {_ci(d['ci'])}, {word}.")
    kl = summary['methods'].get('kl')
    if kl and k:
        out.append(f"KL-Dist, the same teachers without the data partition: success rate {kl['success_rate']:.0f}% "
                   f"{_ci(kl['success_ci'], 0, signed=False)}, mean {kl['mean_delta']:+.2f} points "
                   f"{_ci(kl['mean_delta_ci'])}, significant losses in {kl['significant_losses']:.0f}% of pairs "
                   f"(KL+DP: {k['significant_losses']:.0f}%).")
    return out


def report_markdown(summary: dict, plots_rel: str, counts: dict | None = None) -> str:
    parts = [progress_line(counts), ''] if counts else []
    c = summary.get('compute')
    if c:
        threads = ' or '.join(map(str, c['threads'])) or 'an unrecorded number of'
        parts += [f"Compute: the {c['runs']} runs took {c['hours']:.1f} hours of wall time in all, each one process "
                  f"at {threads} thread(s) (summed run by run; runs that ran side by side count each).", '']
    words = verdict(summary)
    if words:
        parts += ['**Verdict, computed from the runs:** ' + ' '.join(words), '']
    parts += [methods_table(summary), '']
    d = summary.get('kldp_minus_ce')
    if d:
        parts.append(f"**KL+DP minus the CE control** (paired by student, {d['n']} pairs of {d['students']} "
                     f"students, interval from resampling students): {d['mean']:+.2f} points {_ci(d['ci'])}; KL+DP "
                     f"beat its student's control in "
                     f"{d['positive']} of {d['n']} pairs.")
        parts.append('')
    k = (summary.get('knowledge_minus_ce') or {}).get('kldp')
    if k:
        def few(e):
            return f"(no interval: {e['students']} students)"
        parts.append(f"**The teacher's knowledge KL+DP took beyond more training** (its Δρpos minus the CE control's "
                     f"on the same student and teacher, {k['n']} pairs, interval from resampling students; ρpos is "
                     f"the share of test images the teacher gets right and the student wrong, so below 0 means the "
                     f"transfer took more of it than more training did): {k['rho_pos']['mean']:+.2f} points "
                     f"{_ci(k['rho_pos']['ci'])}, below 0 in {k['rho_pos']['negative']} of {k['n']} pairs; Δρneg "
                     f"minus the control's (what the student knew and the teacher did not; below 0 means more of "
                     f"it lost than more training loses): {k['rho_neg']['mean']:+.2f} {_ci(k['rho_neg']['ci'])}."
                     + ''.join(f" From {side.split('_')[0]} teachers ({e['n']} pairs): Δρpos "
                               f"{e['rho_pos']['mean']:+.2f} "
                               f"{_ci_over(e['rho_pos']['ci'], e['students'], few(e))}, Δρneg "
                               f"{e['rho_neg']['mean']:+.2f} {_ci_over(e['rho_neg']['ci'], e['students'], few(e))} "
                               f"against the control."
                               for side, e in (k.get('by_teacher_strength') or {}).items() if e))
        parts.append('')
    parts += ['Mean Δtransf per student over its teachers (the paper\'s Table 1 on the zoo):', '',
              per_student_table(summary), '']
    routing = summary.get('routing') or {}
    if routing.get('kldp'):
        r = routing['kldp']
        flips = '' if r.get('routed_pos_flips') is None else (
            f"; {r['routed_pos_flips']:.0f}% of the positive-flip samples (teacher right, frozen student wrong) "
            f"and {r['routed_neg_flips']:.0f}% of the negative-flip samples (paper: 72% / 9%)")
        parts += [f"Routing (KL+DP, supervised): {r['routed']:.0f}% of training samples went to the teacher{flips}.",
                  '']
    seq = sequential_table(summary)
    if seq:
        parts += ['Sequential KL+DP with each student\'s 2 and 3 most complementary teachers:', '', seq, '']
    parts += [f'![success rate per method]({plots_rel}/{SUCCESS_PLOT})',
              f'![transfer delta against the accuracy gap]({plots_rel}/{DELTA_PLOT})']
    return '\n'.join(parts)


def write_readme_section(readme: Path, text: str) -> None:
    content = readme.read_text()
    if BEGIN not in content or END not in content:
        raise SystemExit(f'{readme} has no {BEGIN} ... {END} markers to write the study report between.')
    head, rest = content.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f'{head}{BEGIN}\n{text}\n{END}{tail}')


def study_progress(records: list[dict]) -> dict:
    """Finished runs of each kind against the plan of studies/zoo/study.py (zoo size, methods)."""
    from .study import zoo_names
    n = len(zoo_names())
    kinds = [r['kind'] for r in records]
    return {'pair runs': (kinds.count('pair'), n * (n - 1) * len(PAIR_METHODS)),
            'CE controls': (kinds.count('control'), n),
            'sequential runs': (kinds.count('sequential'), 2 * n),
            'CE controls at 2 and 3 budgets': (kinds.count('sequential-control'), 2 * n)}


def report_main(args) -> None:
    from .study import RUNS_DIR, STUDY_DIR, ROOT
    records = load_records(RUNS_DIR)
    scans = [STUDY_DIR / 'scan_test.json', STUDY_DIR / 'scan_ce_test.json']
    summary = summarize(records, *[json.loads(p.read_text())['students'] if p.is_file() else None for p in scans])
    if args.json:
        print(json.dumps(summary, indent=1, default=str))
        return
    plots = STUDY_DIR / 'plots'
    text = report_markdown(summary, plots.relative_to(ROOT).as_posix(), study_progress(records))
    print(text)
    if not args.no_write:
        plot_success_rates(summary, plots / SUCCESS_PLOT)
        plot_delta_vs_gap(records, plots / DELTA_PLOT)
        (STUDY_DIR / 'summary.json').write_text(json.dumps(summary, indent=1, default=str))
        write_readme_section(Path(args.readme), text)
