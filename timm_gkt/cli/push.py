"""Push (or retry pushing) a finished transfer run to the Hugging Face Hub.

    python -m timm_gkt.push RUN_DIR REPO_ID [--private] [--revision R] [--create-pr]
                            [--min-delta X] [--max-p-value P] [--beat-control] [--force] [--endpoint URL]

Reads RUN_DIR/results.json, applies the push gate (Δtransf on the eval split strictly
greater than --min-delta, McNemar p at most --max-p-value when given; with --beat-control, significantly
better than the run's CE control, ``--control ce``), checks that the
token may write to REPO_ID, re-renders the model card with REPO_ID and uploads
RUN_DIR/export in one commit. The token comes from HF_TOKEN or `hf auth login`, never
from the command line (it would end up in shell history and process lists).

Exit codes: 0 pushed, 1 error (nothing or not everything pushed; the export is intact),
2 usage error, 3 the gate refused: not better than the start, 4 the gate refused: not better than more
training (--beat-control); nothing pushed on 3 or 4.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ..hub import EXIT_PUSHED, PushTarget, write_step_summary
from ..hub.publish import publish


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='python -m timm_gkt.push',
        description='Push a finished timm_gkt run (RUN_DIR/export) to the Hugging Face Hub if it passes the gate '
                    '(Δtransf above --min-delta, McNemar p at most --max-p-value, with --beat-control better than '
                    'the CE control). Exit codes: 0 pushed, 1 error, 2 usage, 3 refused: not better than the start, '
                    '4 refused: not better than more training.')
    p.add_argument('run_dir', metavar='RUN_DIR', help='run folder written by train.py (holds results.json and export/)')
    p.add_argument('repo_id', metavar='REPO_ID', help='NAMESPACE/NAME of the model repository (created if missing)')
    p.add_argument('--private', action='store_true', help='create the repository private (an existing one keeps its visibility)')
    p.add_argument('--revision', default=None, help='branch to push to (created from main if missing)')
    p.add_argument('--create-pr', action='store_true', help='open a pull request against main instead of committing to it')
    p.add_argument('--min-delta', type=float, default=0.0, help='push only if Δtransf (top-1 points) is greater than this')
    p.add_argument('--max-p-value', type=float, default=None, help="push only if McNemar's p-value is at most this")
    p.add_argument('--beat-control', action='store_true',
                   help='push only if the student is significantly better than the run\'s CE control (paired McNemar '
                        'p < 0.05; a run trained with --control ce)')
    p.add_argument('--force', action='store_true', help='push even if the gate refuses')
    p.add_argument('--endpoint', default=None, help='Hub endpoint (default: HF_ENDPOINT or https://huggingface.co)')
    p.add_argument('--retries', type=int, default=3, help='retries of transient upload failures (exponential back-off)')
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    # retries and the pull-request URL are logged by timm_gkt.hub.publish; show them without a logging setup
    logging.basicConfig(level=logging.WARNING, format='%(message)s')
    logging.getLogger('timm_gkt').setLevel(logging.INFO)
    target = PushTarget(args.repo_id, private=args.private, revision=args.revision, create_pr=args.create_pr,
                        min_delta=args.min_delta, max_p_value=args.max_p_value, endpoint=args.endpoint,
                        beat_control=args.beat_control)
    outcome = publish(args.run_dir, target, force=args.force, retries=args.retries)
    print(outcome.message, file=sys.stdout if outcome.code == EXIT_PUSHED else sys.stderr)
    try:
        results = json.loads((Path(args.run_dir) / 'results.json').read_text())
    except (OSError, ValueError):
        return outcome.code  # publish has already said what is wrong with the run folder
    write_step_summary(results, outcome.message)
    return outcome.code

