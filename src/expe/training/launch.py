"""Launching training under torchrun, with exit codes a scheduler can act on.

`python -m expe.training.launch` takes torchrun's own arguments. When torchrun is stopped by a signal
(Slurm preemption or time limit sends SIGTERM; torchrun forwards it to the workers, which checkpoint),
it exits 128 + signal (143), not 1; a worker that exited 143 after checkpointing is reported as 143
too. A resubmitted job resumes.

    python -m expe.training.launch --standalone --nproc_per_node 2 -m expe.cli train ...

`expe train --nproc N` outside torchrun replaces itself by that launch (`relaunch_under_torchrun`);
inside a Slurm allocation of several nodes, by one torchrun per node through srun (`launch_command`).
"""

from __future__ import annotations

import os
import sys


def launch_command(argv: list[str], nproc: int, env: dict) -> list[str]:
    """The command that runs `expe <argv>` as a DDP job: torchrun (through this module) with `nproc`
    processes on this node; inside a Slurm allocation of several nodes, one torchrun per node
    through srun, meeting by c10d rendezvous on the first node (the multi-node recipe of dist.py)."""
    rest = _strip_nproc(argv)
    nodes = int(env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or 1)
    tail = ["-m", "expe.cli"] + rest
    if nodes > 1:
        head = env.get("EXPE_RDZV_HOST") or _first_host(env["SLURM_JOB_NODELIST"])
        return ["srun", f"--nodes={nodes}", "--ntasks-per-node=1", "--kill-on-bad-exit=1", sys.executable, "-m",
                "expe.training.launch", f"--nnodes={nodes}", f"--nproc_per_node={nproc}", "--rdzv_backend=c10d",
                f"--rdzv_endpoint={head}:{env.get('EXPE_RDZV_PORT', '29500')}",
                f"--rdzv_id={env.get('SLURM_JOB_ID', 'expe')}"] + tail
    return [sys.executable, "-m", "expe.training.launch", "--standalone", f"--nproc_per_node={nproc}"] + tail


def _first_host(nodelist: str) -> str:
    import subprocess as sp

    try:
        return sp.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                      check=True).stdout.split()[0]
    except (OSError, sp.CalledProcessError, IndexError):
        return nodelist.split(",")[0].split("[")[0]


def _strip_nproc(argv: list[str]) -> list[str]:
    rest, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--nproc":
            skip = True
            continue
        if a.startswith("--nproc="):
            continue
        rest.append(a)
    return rest


def needs_relaunch(nproc: int) -> bool:
    """Several processes (or nodes) requested, and not yet under torchrun."""
    nodes = int(os.environ.get("SLURM_JOB_NUM_NODES") or 1)
    return (nproc > 1 or nodes > 1) and "WORLD_SIZE" not in os.environ


def relaunch_under_torchrun(argv: list[str], nproc: int, threads: int) -> None:
    """Replace this process by the DDP launch of the same command, so that signals (Slurm's SIGTERM)
    reach torchrun, which forwards them."""
    import shutil

    os.environ["OMP_NUM_THREADS"] = str(max(1, threads // nproc))
    cmd = launch_command(argv, nproc, dict(os.environ))
    print("expe: launching " + " ".join(cmd), file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(shutil.which(cmd[0]) or cmd[0], cmd)


def main() -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    args = get_args_parser().parse_args()
    try:
        run(args)
    except SignalException as e:
        print(f"expe.training.launch: torchrun stopped by signal {int(e.sigval)}; workers checkpointed", file=sys.stderr)
        return 128 + int(e.sigval)
    except ChildFailedError as e:
        codes = {f.exitcode for f in e.failures.values()}
        print(f"expe.training.launch: worker(s) failed with exit code(s) {sorted(codes)}", file=sys.stderr)
        if codes <= {143, -15}:
            return 143
        return max((c for c in codes if c > 0), default=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
