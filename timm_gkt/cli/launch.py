"""``python -m timm_gkt.launch [--num-processes N] -- <train flags>``: 1..N processes, the exit codes and one-line
errors of :mod:`timm_gkt.cli.boundary` kept.

``accelerate launch`` turns every non-zero exit of its script into 1 (and adds a traceback of its own), so a CI
job cannot tell "no significant improvement" (3) from a crash; Ctrl-C under it ends without a word. This
launcher is Accelerate's for what it decides (its launch parser and ``prepare_multi_gpu_env``: the master
port, mixed precision, threads per process) and starts the processes itself: each runs ``timm_gkt.train``
with RANK, LOCAL_RANK and WORLD_SIZE set, as torchrun would; on a machine without GPUs they are gloo
processes (:func:`timm_gkt.cli.preflight.create_accelerator`). Each process leaves its error line in a status
folder instead of printing it (:func:`timm_gkt.cli.boundary.emit`); the launcher prints one line and exits
with its code: rank 0's when it failed, else the first that failed; 1 for a process that died without a word;
rank 0's 0, 3 or 4 when all finished. Ctrl-C (or SIGTERM) is passed to every process once; exit 130.
With one process, ``timm_gkt.train`` runs in this process.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .boundary import EXIT_ERROR, EXIT_INTERRUPTED, STATUS_DIR_ENV, guarded
from .flags import OneLineParser
from .processes import LAUNCH_ENV

GRACE_S = 10.0  # how long the other processes may take to stop on their own once one has failed
STOP_S = 60.0  # how long an interrupted process may take to leave (it finishes its batch)


def main(argv=None) -> int:
    return guarded(launch, argv)


def launch(argv: list[str]) -> int:
    own, train_argv = split_argv(argv)
    p = OneLineParser(prog='python -m timm_gkt.launch', description=__doc__.split('\n')[0],
                      usage='%(prog)s [--num-processes N] [--gpu-ids IDS] [--main-process-port PORT] -- TRAIN FLAGS')
    p.add_argument('--num-processes', type=int, default=1, help='processes on this machine (default: 1)')
    p.add_argument('--gpu-ids', default=None, help='GPUs to use, e.g. 0,1 (default: all)')
    p.add_argument('--main-process-port', type=int, default=0, help='port of rank 0 (default: a free one)')
    args = p.parse_args(own)
    if args.num_processes < 1:
        p.error(f'--num-processes {args.num_processes} is not a process count; give 1 or more')
    if args.num_processes == 1:
        from .run import main as train_main
        os.environ[LAUNCH_ENV] = '1'
        return train_main(train_argv)
    return run_processes(args, train_argv)


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """The launcher's own flags before ``--``, the train flags after it (all of them when there is no ``--``)."""
    if '--' in argv:
        i = argv.index('--')
        return argv[:i], argv[i + 1:]
    return [], argv


def process_env(args, train_argv: list[str]) -> dict[str, str]:
    """What ``accelerate launch --multi_gpu --num_processes N -m timm_gkt.train`` gives its processes, from
    Accelerate's own parser and environment builder (rank variables are set per process)."""
    from accelerate.commands.launch import launch_command_parser
    from accelerate.utils import prepare_multi_gpu_env
    threads = os.environ.get('OMP_NUM_THREADS') or str(max(1, (os.cpu_count() or 1) // args.num_processes))
    launch = ['--multi_gpu', '--num_processes', str(args.num_processes), '--num_machines', '1',
              '--mixed_precision', 'no', '--dynamo_backend', 'no', '--num_cpu_threads_per_process', threads,
              '--main_process_port', str(args.main_process_port)]
    if args.gpu_ids:
        launch += ['--gpu_ids', args.gpu_ids]
    accelerate_args = launch_command_parser().parse_args([*launch, '-m', 'timm_gkt.train', *train_argv])
    env = prepare_multi_gpu_env(accelerate_args)
    env.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(accelerate_args.master_port),
               WORLD_SIZE=str(args.num_processes), LOCAL_WORLD_SIZE=str(args.num_processes),
               **{LAUNCH_ENV: str(args.num_processes)})
    return env


def run_processes(args, train_argv: list[str]) -> int:
    n = args.num_processes
    with tempfile.TemporaryDirectory(prefix='timm_gkt_launch_') as status:
        env = {**process_env(args, train_argv), STATUS_DIR_ENV: status}
        cmd = [sys.executable, '-m', 'timm_gkt.train', *train_argv]
        # own sessions: a terminal's Ctrl-C reaches the launcher alone, which passes it on exactly once
        procs = [subprocess.Popen(cmd, env={**env, 'RANK': str(r), 'LOCAL_RANK': str(r)}, start_new_session=True)
                 for r in range(n)]
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            stopped, interrupted = supervise(procs), False
        except KeyboardInterrupt:
            stopped, interrupted = stop(procs, signal.SIGINT, STOP_S), True
        finally:
            signal.signal(signal.SIGTERM, previous)
        code, line = outcome([p.returncode for p in procs], read_status(Path(status), n), stopped, interrupted)
    if line:
        print(line, file=sys.stderr)
    return code


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def supervise(procs: list[subprocess.Popen]) -> set[int]:
    """Wait for every process; once one fails, the others get ``GRACE_S`` to stop on their own (a process left
    waiting for a failed one in a collective would wait for gloo's half-hour timeout). Returns the ranks the
    launcher had to stop."""
    deadline = None
    while any(p.poll() is None for p in procs):
        if deadline is None and any(p.returncode not in (None, 0, 3) for p in procs):
            deadline = time.monotonic() + GRACE_S
        if deadline is not None and time.monotonic() > deadline:
            return stop(procs, signal.SIGTERM, 5.0)
        time.sleep(0.1)
    return set()


def stop(procs: list[subprocess.Popen], sig, wait_s: float) -> set[int]:
    """Send ``sig`` to every running process, wait, then kill what is left; the ranks that were running."""
    running = {r for r, p in enumerate(procs) if p.poll() is None}
    for r in running:
        procs[r].send_signal(sig)
    deadline = time.monotonic() + wait_s
    for r in running:
        try:
            procs[r].wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            procs[r].kill()
            procs[r].wait()
    return running


def read_status(folder: Path, n: int) -> dict[int, dict]:
    out = {}
    for r in range(n):
        path = folder / f'rank{r}.json'
        if path.is_file():
            out[r] = json.loads(path.read_text())
    return out


def outcome(codes: list[int], status: dict[int, dict], stopped: set[int], interrupted: bool
            ) -> tuple[int, str | None]:
    """The launcher's exit code and the one line it prints (None when every process finished)."""
    from .run import INTERRUPTED
    if interrupted:
        return EXIT_INTERRUPTED, status.get(0, {}).get('line') or f'error: {INTERRUPTED}'
    failed = sorted(status, key=lambda r: (r != 0, r))
    if failed:
        return status[failed[0]]['code'], status[failed[0]]['line']
    for rank, code in enumerate(codes):
        if code < 0 and rank not in stopped:  # killed by a signal (out of memory, a crash): it could not say why
            return EXIT_ERROR, (f'error: process {rank} of {len(codes)} was killed by signal {-code} without a '
                                f'message; if it ran out of memory, lower -b or use fewer processes, and resume '
                                f'with --resume auto (with --experiment)')
        if code not in (0, 3, 4) and rank not in stopped:
            return code, None  # it said why on its own (e.g. a failed push)
    return codes[0], None


if __name__ == '__main__':
    sys.exit(main())
