"""The GitHub Actions step summary of a run: before/after table, verdict, teachers, push decision."""
from __future__ import annotations

import os

from ..report.results import before_after_rows, markdown_rows, pct, pvalue_text, verdict_of, versus_control_text
from ..models.spec import short_name


def step_summary(results: dict, decision: str) -> str:
    """Markdown for a CI job summary."""
    student = results.get('student_name') or short_name(results.get('student') or 'student')
    teachers = results.get('teachers') or []
    method = results.get('method_title') or results.get('method') or '?'
    lines = [
        f"### timm_gkt: {student} ← {', '.join(t.get('name', '?') for t in teachers) or 'no teacher'} ({method})",
        '',
        f"Evaluated on {results.get('dataset') or '?'} / {results.get('eval_split') or '?'}"
        + (f" ({results['eval_samples']} images)" if results.get('eval_samples') else '') + '.',
        '',
        '| | before | after | Δ |',
        '|---|---:|---:|---:|',
        *markdown_rows(before_after_rows(results)),
        '',
        f"Knowledge gain {pct(results.get('knowledge_gain'))}%, loss {pct(results.get('knowledge_loss'))}%, "
        f"McNemar p = {pvalue_text(results.get('p_value'))}.",
        '',
        f'**Verdict:** {verdict_of(results).text}.',
    ]
    versus = versus_control_text(results)
    if versus:
        lines += ['', f'**vs more training:** {versus}.']
    if teachers:
        lines += ['', '| teacher | top-1 | routed to teacher |', '|---|---:|---:|']
        for t in teachers:
            routed = f"{pct(t.get('routed_share'), 1)}%" if t.get('routed_share') is not None else '–'
            lines.append(f"| {t.get('name', '?')} | {pct(t.get('top1'))} | {routed} |")
    lines += ['', f'**Decision:** {decision}', '']
    return '\n'.join(lines)


def write_step_summary(results: dict, decision: str, path: str | os.PathLike | None = None) -> None:
    """Append the summary to ``path`` or to $GITHUB_STEP_SUMMARY; do nothing when neither is set."""
    path = path or os.environ.get('GITHUB_STEP_SUMMARY')
    if not path:
        return
    with open(path, 'a', encoding='utf-8') as f:  # GitHub collects the file; other steps append to it too
        f.write(step_summary(results, decision) + '\n')
