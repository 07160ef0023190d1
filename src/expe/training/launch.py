"""torchrun, with exit codes a scheduler can act on: `python -m expe.training.launch` takes torchrun's own
arguments. When torchrun is stopped by a signal (Slurm preemption or time limit sends SIGTERM;
torchrun forwards it to the workers, which checkpoint), it exits 128 + signal (143), not 1; a
worker that exited 143 after checkpointing is reported as 143 too. A resubmitted job resumes.

    python -m expe.training.launch --standalone --nproc_per_node 2 -m expe.cli train ...
"""

from __future__ import annotations

import sys


def main() -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    args = get_args_parser().parse_args()
    try:
        run(args)
    except SignalException as e:
        print(f"expe.launch: torchrun stopped by signal {int(e.sigval)}; workers checkpointed", file=sys.stderr)
        return 128 + int(e.sigval)
    except ChildFailedError as e:
        codes = {f.exitcode for f in e.failures.values()}
        print(f"expe.launch: worker(s) failed with exit code(s) {sorted(codes)}", file=sys.stderr)
        if codes <= {143, -15}:
            return 143
        return max((c for c in codes if c > 0), default=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
