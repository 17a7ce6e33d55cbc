"""The converged study's report: three blocks of pairs side by side, the map of where transfer beats more training,
and the pre-registered hypotheses (studies/converged/PLAN.md), all from the run records."""
from __future__ import annotations

import json
from pathlib import Path

from timm_gkt.report import bootstrap_mean_ci, mean

from studies.zoo.summary import MIN_STUDENTS, method_summary, minus_control

HERE = Path(__file__).resolve().parent
BLOCKS = {
    'within': 'within the converged zoo',
    'to_first': 'converged teachers -> first-zoo students',
    'to_converged': 'first-zoo teachers -> converged students',
}
MAP_PLOT = HERE / 'plots' / 'where_transfer_wins.png'
PLATEAU = 0.10  # convergence rule (b): a student whose own CE control moves it by at most this is at its plateau
BEGIN, END = '<!-- converged:begin -->', '<!-- converged:end -->'


def seed_of(record: dict) -> int:
    flags = record.get('flags') or []
    seeds = [flags[i + 1] for i, f in enumerate(flags[:-1]) if f == '--seed']
    return int(seeds[-1]) if seeds else 0


def block_of(record: dict, converged: set[str]) -> str | None:
    if record['kind'] == 'control' or not record.get('teachers'):
        return None
    s_conv, t_conv = record['student'] in converged, record['teachers'][0] in converged
    if s_conv and t_conv:
        return 'within'
    if t_conv:
        return 'to_first'
    return 'to_converged' if s_conv else None


def organise(records: list[dict], converged: set[str]) -> tuple[dict, dict]:
    """(runs[block][method][(student, teacher, seed)] -> results, controls[(student, seed)] -> results)."""
    runs, controls = {b: {} for b in BLOCKS}, {}
    for rec in records:
        key_seed = seed_of(rec)
        if rec['kind'] == 'control':
            controls[(rec['student'], key_seed)] = rec['results']
            continue
        block = block_of(rec, converged)
        if block is not None:
            runs[block].setdefault(rec['method'], {})[(rec['student'], rec['teachers'][0], key_seed)] = rec['results']
    return runs, controls


def summarize(records: list[dict], index: dict | None) -> dict:
    converged = {m['name'] for m in (index or {}).get('models', []) if m['convergence']['converged']}
    runs, controls = organise(records, converged)
    out = {'blocks': {}, 'controls': {}}
    for block, methods in runs.items():
        out['blocks'][block] = {method: {**method_summary([r[k] for k in sorted(r)], [k[0] for k in sorted(r)]),
                                         'minus_ce': minus_control(r, controls, lambda k: (k[0], k[2]))}
                                for method, r in methods.items()}
        kldp = methods.get('kldp')  # paired on the same (student, teacher, seed): KL-Dist and the variant have seed 0
        for method, r in methods.items() if kldp else ():
            if method == 'kl':
                out['blocks'][block]['kldp']['minus_kl'] = minus_control(kldp, r, lambda k: k)
            elif method != 'kldp':  # the objectives study's chosen variant
                out['blocks'][block][method]['minus_kldp'] = minus_control(r, kldp, lambda k: k)
    for zoo, members in (('converged', converged), ('first', {s for s, _ in controls} - converged)):
        deltas = {k: r['transfer_delta'] for k, r in controls.items() if k[0] in members}
        if deltas:
            lo, hi = bootstrap_mean_ci(list(deltas.values()), [s for s, _ in deltas])
            out['controls'][zoo] = {'n': len(deltas), 'mean': mean(list(deltas.values())), 'ci': [lo, hi]}
    out['map'] = transfer_map(runs, controls, index)
    out['regions'] = regions(out['map'])
    out['hypotheses'] = hypotheses(out)
    return out


def transfer_map(runs: dict, controls: dict, index: dict | None) -> list[dict]:
    """Per KL+DP pair (seeds averaged): KL+DP − CE against how far the student is from its plateau (its CE
    control's Δ) and the teacher's fit on its training images (clean train top-1, converged zoo only)."""
    fit = {m['name']: m.get('clean_train_top1') for m in (index or {}).get('models', [])}
    points = []
    for block, methods in runs.items():
        by_pair = {}
        gap = {}
        for (s, t, seed), r in methods.get('kldp', {}).items():
            if (s, seed) in controls:
                by_pair.setdefault((s, t), []).append((r['transfer_delta'] - controls[(s, seed)]['transfer_delta'],
                                                       controls[(s, seed)]['transfer_delta']))
                gap[(s, t)] = r['teachers'][0]['top1'] - r['top1_before']
        for (s, t), values in sorted(by_pair.items()):
            points.append({'block': block, 'student': s, 'teacher': t, 'seeds': len(values),
                           'kldp_minus_ce': mean([v for v, _ in values]), 'student_ce_delta': mean([c for _, c in values]),
                           'teacher_train_top1': fit.get(t), 'teacher_minus_student_top1': gap[(s, t)],
                           'teacher_stronger': gap[(s, t)] > 0})
    return points


def regions(points: list[dict]) -> list[dict]:
    """The map in numbers (PLAN.md, Changes): KL+DP − CE control in four cells, the student at its plateau (its CE
    control's Δ ≤ PLATEAU) or short of fit × the teacher stronger or weaker than the student; intervals resample
    students."""
    cells = []
    for plateau in (True, False):
        for stronger in (True, False):
            pts = [p for p in points if (p['student_ce_delta'] <= PLATEAU) == plateau
                   and p['teacher_stronger'] == stronger]
            if not pts:
                continue
            diffs, students = [p['kldp_minus_ce'] for p in pts], [p['student'] for p in pts]
            lo, hi = bootstrap_mean_ci(diffs, students)
            cells.append({'student_at_plateau': plateau, 'teacher_stronger': stronger, 'pairs': len(pts),
                          'students': len(set(students)), 'mean': mean(diffs), 'ci': [lo, hi],
                          'positive': sum(d > 0 for d in diffs)})
    return cells


def regions_markdown(cells: list[dict]) -> str:
    lines = [f"Where KL+DP beats more training (KL+DP − CE control per pair, seeds averaged; a student is at its "
             f"plateau when its own CE control moves it by ≤ {PLATEAU:.2f} points, rule (b) of the zoo):", '',
             '| student | teacher | pairs | students | KL+DP − CE control [clustered] | pairs above |',
             '|---|---|---:|---:|---:|---:|']
    for c in cells:
        verdict = (f' (fewer than {MIN_STUDENTS} students: no verdict)' if c['students'] < MIN_STUDENTS else
                   ' (beats it)' if c['ci'][0] > 0 else ' (below it)' if c['ci'][1] < 0 else ' (within noise)')
        lines.append(f"| {'at its plateau' if c['student_at_plateau'] else 'short of fit'} | "
                     f"{'stronger' if c['teacher_stronger'] else 'weaker'} | {c['pairs']} | {c['students']} | "
                     f"{c['mean']:+.2f} {_ci(c['ci'])}{verdict} | {c['positive']} of {c['pairs']} |")
    return '\n'.join(lines)


def hypotheses(summary: dict) -> dict:
    """PLAN.md's three hypotheses, each True, False or None (not measured yet, or fewer than MIN_STUDENTS students
    behind an interval)."""
    def block(name, method):
        return summary['blocks'].get(name, {}).get(method)
    conv_ce = summary['controls'].get('converged')
    within, to_first = block('within', 'kldp'), block('to_first', 'kldp')

    def above_kl(kldp):  # KL+DP − KL-Dist on the same pairs and seeds (None: KL-Dist not run there yet)
        return None if not kldp.get('minus_kl') else kldp['minus_kl']['mean']

    h1 = None if conv_ce is None or conv_ce['n'] < MIN_STUDENTS else abs(conv_ce['mean']) <= 0.05
    h2 = None  # undecided until the interval is over enough students to mean something
    if within and within['minus_ce'] and within['minus_ce']['students'] >= MIN_STUDENTS:
        h2 = (within['minus_ce']['ci'][0] > 0 and within['success_rate'] >= 90
              and within['significant_loss_pairs'] == 0
              and (above_kl(within) is None or above_kl(within) > 0))
    h3 = None
    if to_first and to_first['minus_ce'] and to_first['minus_ce']['students'] >= MIN_STUDENTS:
        h3 = to_first['minus_ce']['ci'][0] > 0 and (above_kl(to_first) is None or above_kl(to_first) >= 0)
    return {'converged_ce_near_zero': h1, 'kldp_beats_ce_within_converged': h2,
            'kldp_beats_ce_from_converged_teachers': h3}


def _ci(ci) -> str:
    return f'[{ci[0]:+.2f}, {ci[1]:+.2f}]'


def markdown(summary: dict) -> str:
    lines = ['| pairs | method | runs | students | success rate [Wilson] [clustered] | mean Δ [clustered] | '
             'significant gains / losses | minus CE control [clustered] |', '|---|---|---:|---:|---:|---:|---:|---:|']
    for block, methods in summary['blocks'].items():
        for method, s in sorted(methods.items()):
            clustered = s.get('success_ci_clustered') or [float('nan')] * 2
            minus = s['minus_ce']
            minus_text = '–' if not minus else f"{minus['mean']:+.2f} {_ci(minus['ci'])} ({minus['positive']} of {minus['n']} above)"
            lines.append(f"| {BLOCKS[block]} | {method} | {s['n']} | {s['students']} | {s['success_rate']:.0f}% "
                         f"[{s['success_ci'][0]:.0f}, {s['success_ci'][1]:.0f}] [{clustered[0]:.0f}, {clustered[1]:.0f}]"
                         f" | {s['mean_delta']:+.2f} {_ci(s['mean_delta_ci'])} | {s['significant_gain_pairs']} / "
                         f"{s['significant_loss_pairs']} | {minus_text} |")
    for key, reference in (('minus_kl', 'KL-Dist'), ('minus_kldp', 'KL+DP')):
        for block, methods in summary['blocks'].items():
            for method, s in sorted(methods.items()):
                if m := s.get(key):
                    lines.append(f"\n{'KL+DP' if method == 'kldp' else method} − {reference}, {BLOCKS[block]} (the same "
                                 f"pairs and seeds): {m['mean']:+.2f} {_ci(m['ci'])} over {m['n']} pairs, "
                                 f"{m['students']} students, {m['positive']} above.")
    for zoo, c in summary['controls'].items():
        lines.append(f"\nCE control, {zoo} zoo: mean Δ {c['mean']:+.2f} {_ci(c['ci'])} over {c['n']} runs.")
    if summary.get('regions'):
        lines.append('\n' + regions_markdown(summary['regions']))
    lines.append('\nHypotheses (studies/converged/PLAN.md): ' + ', '.join(
        f"{name}: {'undecided (not measured yet, or too few students)' if v is None else ('holds' if v else 'does not hold')}"
        for name, v in summary['hypotheses'].items()) + '.')
    return '\n'.join(lines)


def plot_map(points: list[dict], path: Path) -> Path | None:
    """Two panels of the same points (KL+DP − CE control per pair): against the student's distance from its plateau
    (its own CE-control Δ) and against the teacher's strength (its test top-1 minus the student's, before
    transfer)."""
    if not points:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(11, 4.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, key, label, line in (
            (axes[0], 'student_ce_delta', "student's CE-control Δ (points): how far from its plateau", PLATEAU),
            (axes[1], 'teacher_minus_student_top1', "teacher's top-1 minus the student's (points)", 0.0)):
        for block, marker in zip(BLOCKS, 'o^s'):
            pts = [p for p in points if p['block'] == block]
            if pts:
                ax.scatter([p[key] for p in pts], [p['kldp_minus_ce'] for p in pts], marker=marker,
                           label=BLOCKS[block], alpha=0.8)
        ax.axhline(0, color='grey', lw=0.8)
        ax.axvline(line, color='grey', lw=0.8, ls=':')  # left panel: left of it the students at their plateau
        ax.set_xlabel(label)
    axes[0].set_ylabel('KL+DP − CE control (points)')
    axes[0].legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches='tight')
    return path


def predictor_markdown(validation: dict | None) -> str:
    """The gain predictor refitted on both zoos (``studies/converged/predictor_validation.json``): its
    leave-one-student-out Spearman per zoo and pooled, and whether the package takes the both-zoo fit."""
    if not validation:
        return ''
    groups = validation['groups']
    lines = ['The gain predictor refitted on both zoos (ridge on the scan\'s features; leave-one-student-out Spearman '
             'between predicted and measured KL+DP Δ; `python -m studies.converged.scans predictor`):', '',
             '| pairs of | students | pairs | scan features | + student\'s CE-control Δ |', '|---|---:|---:|---:|---:|']
    for label in ('first zoo', 'converged zoo', 'pooled'):
        g = groups.get(label)
        if g:
            scan, extra = g['scan features'], g['+ student CE Δ']
            lines.append(f"| {label} | {scan['students']} | {scan['pairs']} | {scan['spearman']:+.2f} | "
                         f"{extra['spearman']:+.2f} |")
    new = groups.get('new pairs')
    if new:
        lines += ['', f"On the {new['pairs']} pairs the first zoo never held ({new['students']} students), the first "
                      f"zoo's fit ranks at Spearman {new['first_zoo_fit']:+.2f} and a fit on both zoos, left one "
                      f"student out, at {new['both_zoos_leave_one_student_out']:+.2f}: "
                      + ('the package takes the both-zoo fit.' if new['refit_the_package'] else
                         "the package keeps the first zoo's fit (PLAN.md, Changes).")]
    return '\n'.join(lines)


def report_main(args, records: list[dict], index: dict | None, progress: tuple[int, int] | None = None) -> None:
    summary = summarize(records, index)
    if args.json:
        print(json.dumps(summary, indent=1, default=str))
        return
    print(markdown(summary))
    if not getattr(args, 'no_write', False):
        plot_map(summary['map'], MAP_PLOT)
        (HERE / 'summary.json').write_text(json.dumps(summary, indent=1, default=str))
        from studies.zoo.report import write_readme_section
        write_readme_section(HERE.parents[1] / 'README.md', readme_section(summary, index, progress),
                             BEGIN, END)


def readme_section(summary: dict, index: dict | None, progress: tuple[int, int] | None = None) -> str:
    """The README's "Where does transfer beat more training?": the converged zoo's state, the study's table, the
    map and the hypotheses, as far as the records go."""
    from studies.converged.build import ENTRIES
    models = {m['name']: m for m in (index or {}).get('models', [])}
    done = [f"{n} (test top-1 {models[n]['test_top1']:.2f})" for n in (e.name for e in ENTRIES)
            if n in models and models[n]['convergence']['converged']]
    waiting = [e.name for e in ENTRIES if e.name not in models or not models[e.name]['convergence']['converged']]
    own = sorted((HERE / 'runs').glob('*.json'))
    complete = not waiting and progress is not None and progress[0] == progress[1]
    lines = ['### Where does transfer beat more training? The converged zoo' + ('' if complete else ' (in progress)'),
             '',
             'The first zoo is small (0.10-0.43 M parameters) and short of fit: one more budget of plain cross-entropy '
             'still gains +0.14 on its students, and that is what KL+DP loses to. The second zoo '
             '([`zoo/converged/`](zoo/converged/README.md); plan, rule and hypotheses written before training: '
             '[`studies/converged/PLAN.md`](studies/converged/PLAN.md)) holds larger models (1.5-4.9 M) trained until '
             'their training loss stopped falling and a check round of the CE control moved them by at most 0.10 points '
             '(p >= 0.3); the study runs '
             'KL+DP, KL-Dist and the CE control within it and across the two zoos.', '',
             f"Zoo: {len(done)} of {len(ENTRIES)} models converged" + (f": {', '.join(done)}" if done else '')
             + (f"; still training or in their checks: {', '.join(waiting)}." if waiting else '.'),
             f"Study: {len(own)} runs recorded" + (f", {progress[0]} of the plan's {progress[1]}" if progress else '')
             + ' (`python -m studies.converged.study status`).']
    if any(summary['blocks'].values()):
        lines += ['', markdown(summary), '']
        lines += [f'A hypothesis is decided only over at least {MIN_STUDENTS} students (an interval that resamples '
                  f'fewer says little).' if complete else
                  f'Interim numbers: {len(done)} of {len(ENTRIES)} models and part of the runs; a hypothesis is '
                  f'decided only over at least {MIN_STUDENTS} students (an interval that resamples fewer says little).']
        validation = HERE / 'predictor_validation.json'
        if validation.is_file():
            lines += ['', predictor_markdown(json.loads(validation.read_text()))]
        if MAP_PLOT.is_file():
            alt = "KL+DP minus the CE control against the student's distance from its plateau and the teacher's strength"
            lines += ['', f'![{alt}]({MAP_PLOT.relative_to(HERE.parents[1])})']
    else:
        lines += ['', 'No verdict yet: the hypotheses wait for the study\'s runs.']
    return '\n'.join(lines)
