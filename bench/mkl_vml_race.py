"""How often a fresh process's first call of a float unary op differs from its second (oneMKL's VML
first-call dispatch race, pytorch/pytorch#188792), with and without expe.runtime.settle_mkl_dispatch.

Each child process sets 2 intra-op threads, runs a training forward of a small RoPE model twice
(its loss's exp is the process's first exp), then sin, sqrt and tanh twice each on a 512 x 512
float32 tensor (large enough to run on both threads). The race only ever affects a function's first
call, when its kernel is chosen, so a first call that differs from the second is a hit. Both arms
run interleaved in the same waves of concurrent processes (more processes than cores: the race
needs the threads to make their first call together). The rate depends on the load and the
scheduler: on the 2-core development machine it was seen in Slurm jobs running beside others.

    python bench/mkl_vml_race.py [--waves 20] [--per-wave 6] [--launcher 'srun -c 2 -p cpu']
    python bench/mkl_vml_race.py --spec results/.../spec.json --data results/.../shards [...]
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OPS = ("sin", "sqrt", "tanh")
CHECKS = ("train step", *OPS)


def child(settle: bool) -> None:
    import torch

    if settle:
        from expe.runtime import set_threads

        set_threads(2)
    else:
        torch.set_num_threads(2)
    from expe.nn.model import ModelConfig, Transformer

    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=512, seq_len=64, d_model=64, n_layer=2, n_head=4, dropout=0.0,
                                    pe={"name": "rope"}))
    idx = torch.randint(0, 512, (16, 65))
    x = torch.rand(512, 512).mul_(4).sub_(2)
    pos = torch.rand(512, 512).mul_(4)
    bad = {}
    # A process's first call against its second: the race only ever hits the first (its kernel is
    # chosen then), so any difference is the race. The training step first (its loss's exp is the
    # first exp), then each op's first call on its own.
    first = [model(idx[:, :-1], idx[:, 1:])[1] for _ in range(2)]
    bad["train step"] = bool(first[0] != first[1])
    for name in OPS:
        arg = pos if name == "sqrt" else x
        a, b = getattr(torch, name)(arg), getattr(torch, name)(arg)
        bad[name] = bool((a != b).any())
    print(json.dumps(bad))


def child_train(settle: bool, spec: str, data: str) -> None:
    """`expe train` as the workflow runs it (2 threads), the race's workaround on or off; prints the
    first step's loss."""
    import expe.runtime

    if not settle:
        expe.runtime.settle_mkl_dispatch = lambda: None
    from expe.cli import main as expe_main

    with tempfile.TemporaryDirectory() as tmp:
        rc = expe_main(["train", "--spec-file", spec, "--data", data, "--out", f"{tmp}/o", "--checkpoints",
                        f"{tmp}/c", "--no-progress", "--threads", "2"])
        if rc != 0:
            sys.exit(f"mkl_vml_race: expe train failed (exit {rc}); --data must be the token shards of the spec")
        first = json.loads(Path(f"{tmp}/o/metrics.jsonl").read_text().splitlines()[0])
    print(json.dumps({"loss": first["loss"]}))


def waves(a, child_cmd: list[str]):
    """Run `child_cmd + [arm]` in a.waves waves of a.per_wave concurrent processes (under a.launcher),
    the arms alternating within and across waves; yield each process's arm and its last stdout line,
    parsed as JSON."""
    for w in range(a.waves):
        arms = [("plain", "settled")[(i + w) % 2] for i in range(a.per_wave)]
        procs = [(arm, subprocess.Popen([*shlex.split(a.launcher), *child_cmd, arm], stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL if a.spec else None, text=True))
                 for arm in arms]
        for arm, p in procs:
            out = p.communicate()[0]
            if p.returncode != 0:
                sys.exit(f"mkl_vml_race: a {arm} child failed (exit {p.returncode})")
            yield arm, json.loads(out.strip().splitlines()[-1])


def train_storm(a) -> None:
    """--spec/--data: the race in `expe train` itself; a hit is a first loss that differs from the
    one a lone process (no other load) computes with the workaround."""
    spec = json.loads(Path(a.spec).read_text())
    spec["train"]["steps"] = 1
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
    cmd = [sys.executable, __file__, "--spec", f.name, "--data", a.data, "--child"]

    r = subprocess.run([*cmd, "settled"], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"mkl_vml_race: reference run failed ({r.returncode})")
    ref = json.loads(r.stdout.strip().splitlines()[-1])["loss"]
    counts = {arm: [0, 0] for arm in ("plain", "settled")}
    t0 = time.time()
    for arm, got in waves(a, cmd):
        counts[arm][0] += 1
        counts[arm][1] += got["loss"] != ref
    Path(f.name).unlink()
    how = f" under `{a.launcher}`" if a.launcher else ""
    print(f"# mkl_vml_race: expe train (1 step, 2 threads), {a.waves} waves x {a.per_wave} concurrent processes{how},"
          f" {time.time() - t0:.0f} s; lone process's first loss {ref}")
    print(f"{'arm':<10}{'processes':>10}{'first loss differs':>20}")
    for arm, (n, hits) in counts.items():
        print(f"{arm:<10}{n:>10}{hits:>20}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--waves", type=int, default=20)
    ap.add_argument("--per-wave", type=int, default=6, help="concurrent processes per wave, half per arm")
    ap.add_argument("--launcher", default="", help="command each child runs under, e.g. 'srun -c 2 -p cpu'")
    ap.add_argument("--spec", help="a model's spec.json: run `expe train` on --data instead of the bare ops")
    ap.add_argument("--data", help="token shards for --spec")
    ap.add_argument("--child", choices=["plain", "settled"])
    a = ap.parse_args()
    if bool(a.spec) != bool(a.data):
        ap.error("--spec and --data go together")
    if a.child:
        child_train(a.child == "settled", a.spec, a.data) if a.spec else child(a.child == "settled")
        return
    if a.spec:
        train_storm(a)
        return
    counts = {arm: {"processes": 0, **{op: 0 for op in CHECKS}, "any": 0} for arm in ("plain", "settled")}
    t0 = time.time()
    for arm, err in waves(a, [sys.executable, __file__, "--child"]):
        c = counts[arm]
        c["processes"] += 1
        hits = [op for op in CHECKS if err[op]]
        for op in hits:
            c[op] += 1
        c["any"] += bool(hits)
    how = f" under `{a.launcher}`" if a.launcher else ""
    print(f"# mkl_vml_race: {a.waves} waves x {a.per_wave} concurrent processes{how}, {time.time() - t0:.0f} s")
    import torch

    mkl = next((ln.strip(" -") for ln in torch.__config__.show().splitlines() if "Math Kernel" in ln), "no MKL")
    print(f"# torch {torch.__version__}; {mkl}")
    print(f"{'arm':<10}{'processes':>10}" + "".join(f"{op:>12}" for op in CHECKS) + f"{'any':>6}")
    for arm, c in counts.items():
        print(f"{arm:<10}{c['processes']:>10}" + "".join(f"{c[op]:>12}" for op in CHECKS) + f"{c['any']:>6}")


if __name__ == "__main__":
    main()
