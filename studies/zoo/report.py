"""The zoo study's report: from studies/zoo/runs/*.json to tables, two plots, a verdict and README text.

Used by ``python -m studies.zoo.study report``. Everything is computed from the committed run records,
so the report section of ``studies/zoo/README.md`` (between the study markers) can be rebuilt without training.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from timm_gkt.report import pvalue_text

from .recipe import RUNS_DIR, STUDY_DIR, zoo_names
from .summary import MIN_STUDENTS, PAIR_METHODS, load_records, summarize

TITLES = {'ce': 'CE control', 'kl': 'KL-Dist', 'xekl': 'XE-KL', 'xekl-mcl': 'XE-KL + MCL', 'kldp': 'KL+DP',
          'kldp-unsup': 'KL+DP (unsupervised)'}
BEGIN, END = '<!-- study:begin -->', '<!-- study:end -->'
SUCCESS_PLOT, DELTA_PLOT = 'success_rate.png', 'delta_vs_accuracy_gap.png'


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
    """The answer in words, against the targets set before the study (studies/zoo/README.md): computed, not typed."""
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


def write_readme_section(readme: Path, text: str, begin: str = BEGIN, end: str = END) -> None:
    """Replace what stands between the markers ``begin`` and ``end`` (the study's by default) with ``text``."""
    content = readme.read_text()
    if begin not in content or end not in content:
        raise SystemExit(f'{readme} has no {begin} ... {end} markers to write the report between.')
    head, rest = content.split(begin, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f'{head}{begin}\n{text}\n{end}{tail}')


def study_progress(records: list[dict]) -> dict:
    """Finished runs of each kind against the plan of studies/zoo/study.py (zoo size, methods)."""
    n = len(zoo_names())
    kinds = [r['kind'] for r in records]
    return {'pair runs': (kinds.count('pair'), n * (n - 1) * len(PAIR_METHODS)),
            'CE controls': (kinds.count('control'), n),
            'sequential runs': (kinds.count('sequential'), 2 * n),
            'CE controls at 2 and 3 budgets': (kinds.count('sequential-control'), 2 * n)}


def report_main(args) -> None:
    records = load_records(RUNS_DIR)
    scans = [STUDY_DIR / 'scan_test.json', STUDY_DIR / 'scan_ce_test.json']
    summary = summarize(records, *[json.loads(p.read_text())['students'] if p.is_file() else None for p in scans])
    if args.json:
        print(json.dumps(summary, indent=1, default=str))
        return
    plots = STUDY_DIR / 'plots'
    readme = Path(args.readme).resolve()
    # image links relative to the README that shows them (plots/... beside studies/zoo/README.md)
    plots_rel = Path(os.path.relpath(plots, readme.parent)).as_posix()
    text = report_markdown(summary, plots_rel, study_progress(records))
    print(text)
    if not args.no_write:
        plot_success_rates(summary, plots / SUCCESS_PLOT)
        plot_delta_vs_gap(records, plots / DELTA_PLOT)
        (STUDY_DIR / 'summary.json').write_text(json.dumps(summary, indent=1, default=str))
        write_readme_section(readme, text)
