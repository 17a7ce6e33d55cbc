"""How many processes a run was asked for and how many run: said in the run header, warned about when they differ.

``accelerate launch --num_processes 2 script`` without ``--multi_gpu`` on a machine without GPUs starts one
process and says nothing. The count asked for is read from the launcher: ``timm_gkt.launch``'s own variable,
``WORLD_SIZE`` (torchrun, ``accelerate launch --multi_gpu``), else the command line of the ``accelerate launch``
that started this process (parsed with Accelerate's own parser, its config file for what the line leaves out).
"""
from __future__ import annotations

import os

LAUNCH_ENV = 'TIMM_GKT_LAUNCH_PROCESSES'  # set by timm_gkt.launch: the processes it was asked for


def requested_processes(env=None, parent_cmdline: list[str] | None = None) -> tuple[int | None, str]:
    """(processes asked for, by which launcher), or (None, '') when no launcher asked for a number."""
    env = os.environ if env is None else env
    if env.get(LAUNCH_ENV):
        return int(env[LAUNCH_ENV]), 'timm_gkt.launch'
    if env.get('WORLD_SIZE'):
        return int(env['WORLD_SIZE']), 'the launcher (WORLD_SIZE)'
    if 'ACCELERATE_DYNAMO_BACKEND' not in env:  # set by every accelerate launch
        return None, ''
    cmdline = _parent_cmdline() if parent_cmdline is None else parent_cmdline
    return accelerate_launch_processes(cmdline), 'accelerate launch'


def _parent_cmdline() -> list[str]:
    try:
        import psutil
        return psutil.Process(os.getppid()).cmdline()
    except Exception:  # noqa: BLE001 - no parent to ask (gone, or not allowed): no count to compare
        return []


def accelerate_launch_processes(cmdline: list[str]) -> int | None:
    """``--num_processes`` of an ``accelerate launch`` command line, else of its config file, else 1."""
    start = next((i + 1 for i, a in enumerate(cmdline) if a in ('launch', 'accelerate.commands.launch')), None)
    if start is None:
        return None
    from accelerate.commands.launch import launch_command_parser
    try:
        args, _ = launch_command_parser().parse_known_args(cmdline[start:])
    except SystemExit:  # a line Accelerate itself would refuse: it did not start this process
        return None
    if args.num_processes is not None:
        return int(args.num_processes)
    from accelerate.commands.config import default_config_file, load_config_from_file
    config_file = args.config_file or default_config_file
    if os.path.isfile(config_file):
        return int(getattr(load_config_from_file(config_file), 'num_processes', 1) or 1)
    return 1


def describe_processes(accelerator, requested: tuple[int | None, str]) -> list[str]:
    """The run header's process line, and a warning line when the launcher asked for another count."""
    n = accelerator.num_processes
    backend = getattr(accelerator.state, 'backend', None)
    how = f'{backend} on {accelerator.device.type}' if n > 1 and backend else accelerator.device.type
    lines = [f'processes: {n} ({how})']
    asked, launcher = requested
    if asked is not None and asked != n:
        lines.append(f'warning: {launcher} was asked for {asked} processes but {n} {"is" if n == 1 else "are"} '
                     f'running; on a machine without GPUs accelerate launch starts several only with --multi_gpu, or '
                     f'use python -m timm_gkt.launch --num-processes {asked} -- ...')
    return lines
