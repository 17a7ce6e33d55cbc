"""The error boundary of every command: whatever happens, one ``error:`` line and an exit code, never a traceback.

Bad input (:class:`~timm_gkt.errors.BadInput`, refused before any compute) exits 2, a run that failed
(:class:`~timm_gkt.errors.TrainingFailed`) 1, Ctrl-C 130 (a gate that refused a push: 3, or 4 for the
requirement to beat the CE control), anything unexpected 1 with a request to rerun with
``--debug`` (or ``TIMM_GKT_DEBUG=1``), which prints the traceback as well. Usage errors are argparse's: one line,
exit 2.
"""
from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Callable, Sequence

from ..errors import BadInput, TrainingFailed

DEBUG_ENV = 'TIMM_GKT_DEBUG'
STATUS_DIR_ENV = 'TIMM_GKT_STATUS_DIR'  # set by timm_gkt.launch for the processes it starts
EXIT_OK = 0
EXIT_ERROR = 1  # failed during the run (non-finite loss, export or push failure, anything unexpected)
EXIT_BAD_INPUT = 2  # refused before any compute
EXIT_NOT_IMPROVED = 3  # finished, but the gate refused the push: not better than the start
EXIT_NOT_BETTER_THAN_CONTROL = 4  # finished, better than the start but not than more training (--push-beat-control)
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT


def debug_requested(argv: Sequence[str]) -> bool:
    return '--debug' in argv or os.environ.get(DEBUG_ENV, '') not in ('', '0')


def guarded(command: Callable[[list[str]], int], argv: Sequence[str] | None = None,
            interrupted: str = 'interrupted') -> int:
    """Run ``command(argv)`` inside the boundary and return its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(args)
    try:
        return command(args)
    except BadInput as e:
        return fail(f'{e}', EXIT_BAD_INPUT, debug)
    except TrainingFailed as e:
        return fail(f'{e}', EXIT_ERROR, debug)
    except KeyboardInterrupt:
        return fail(interrupted, EXIT_INTERRUPTED, debug)
    except Exception as e:  # noqa: BLE001 - the boundary: a user sees one line, --debug shows the rest
        lines = str(e).strip().splitlines()
        detail = f': {lines[0][:300]}' if lines else ''
        return fail(f'unexpected {type(e).__name__}{detail}; rerun with --debug (or {DEBUG_ENV}=1) for the '
                    f'traceback and report it', EXIT_ERROR, debug)


def fail(message: str, code: int, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    # one line, even when a library's message had several
    emit('error: ' + ' '.join(message.split('\n')), code)
    return code


def emit(line: str, code: int) -> None:
    """The error line on stderr; under ``timm_gkt.launch`` into the launcher's status folder instead, so that N
    processes failing alike end in one line (the launcher prints it) and the launcher knows each one's code."""
    status_dir = os.environ.get(STATUS_DIR_ENV)
    if not status_dir:
        print(line, file=sys.stderr)
        return
    path = Path(status_dir) / f'rank{os.environ.get("RANK", "0")}.json'
    tmp = path.with_suffix('.partial')
    tmp.write_text(json.dumps({'code': code, 'line': line}))
    tmp.replace(path)
