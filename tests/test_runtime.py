"""expe.runtime.set_threads settles oneMKL's VML dispatch before any op can run on several threads
(pytorch/pytorch#188792: a process's first multi-threaded call of a VML function can run a
low-accuracy kernel on one thread's chunk). The race itself is timing-dependent; its rate with
and without the warm-up is measured by bench/mkl_vml_race.py, not here."""

import re
from pathlib import Path

import pytest
import torch

from expe import runtime

SRC = Path(__file__).resolve().parents[1] / "src" / "expe"


def test_the_warm_up_covers_every_op_that_this_torch_sends_to_mkl_vml():
    header = Path(torch.__file__).parent / "include" / "ATen" / "cpu" / "vml.h"
    if not header.exists():
        pytest.skip(f"{header} is not installed with this torch")
    ops = set(re.findall(r"IMPLEMENT_VML_MKL\((\w+),\s*\w+\)", header.read_text())) - {"op"}
    assert ops, f"no IMPLEMENT_VML_MKL in {header}: the header changed; re-read it"
    assert ops == set(runtime.MKL_VML_OPS)


def test_set_threads_calls_each_vml_op_on_one_element_first_and_only_once(monkeypatch):
    events = []
    for name in runtime.MKL_VML_OPS:
        real = getattr(torch, name)
        monkeypatch.setattr(torch, name, lambda x, _n=name, _f=real: (events.append((_n, x.numel(), x.dtype)), _f(x))[1])
    real_set = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (events.append(("threads", n, None)), real_set(n))[1])
    monkeypatch.setattr(runtime, "_vml_settled", False)
    before = torch.get_num_threads()
    try:
        runtime.set_threads(2)
        assert events[-1] == ("threads", 2, None)
        warm = events[:-1]
        assert {(n, d) for n, _, d in warm} == {(n, d) for n in runtime.MKL_VML_OPS
                                                 for d in (torch.float32, torch.float64)}
        assert all(numel == 1 for _, numel, _ in warm)  # one element: computed on this thread alone
        events.clear()
        runtime.set_threads(0)  # at least one thread; no second warm-up
        assert events == [("threads", 1, None)]
    finally:
        real_set(before)


def test_no_module_sets_torch_threads_without_settling_mkl_first():
    raw = [f"{p.relative_to(SRC)}:{i}" for p in SRC.rglob("*.py") for i, ln in enumerate(p.read_text().splitlines(), 1)
           if "torch.set_num_threads(" in ln and p.name != "runtime.py"]
    assert not raw, f"use expe.runtime.set_threads instead of torch.set_num_threads at {raw}"
