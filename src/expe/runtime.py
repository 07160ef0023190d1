"""Device, precision and trained-model loading: what training, evaluation, the probes and the
lm-eval adapter share. Every bad value is a one-line ConfigError naming what is allowed."""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

import torch

from expe.errors import CheckpointError, ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

# Dense (no sparsity) peak tensor-core throughput in bf16/fp16, FLOP/s, for the MFU estimate.
# nanoGPT hard-codes the A100's 312e12; we look the device name up instead.
GPU_PEAK_FLOPS = {
    "H200": 989e12,
    "H100 SXM": 989e12,
    "H100 80GB HBM3": 989e12,
    "H100 NVL": 835e12,
    "H100 PCIe": 756e12,
    "H100": 756e12,  # unknown H100 form factor: the lower (PCIe) figure
    "GH200": 989e12,
    "A100": 312e12,
    "A800": 312e12,
    "L40S": 362e12,
    "L40": 181e12,
    "A10G": 125e12,
    "A10": 125e12,
    "V100": 125e12,
    "RTX 4090": 165e12,
    "RTX 3090": 71e12,
    "T4": 65e12,
}


# The float/double unary ops ATen hands to oneMKL's vector math library (VML) on the CPU, as listed
# by IMPLEMENT_VML_MKL in ATen/cpu/vml.h of torch 2.13 (tests/test_runtime.py checks the installed
# header against this list).
MKL_VML_OPS = ("abs", "acos", "asin", "atan", "cos", "cosh", "erf", "erfc", "erfinv", "exp", "expm1", "log",
               "log10", "log1p", "log2", "sin", "sinh", "sqrt", "tan", "tanh", "trunc")
_vml_settled = False


def settle_mkl_dispatch() -> None:
    """Call each VML function once, on one element (so on this thread alone), before any op runs on
    several threads.

    oneMKL 2024.2 (the one torch 2.13's wheel carries) picks each VML function's kernel on its first
    call. When that first call runs on several intra-op threads at once, one thread can run a
    low-accuracy kernel over its whole chunk (relative error ~1e-4 instead of ~1e-7), once per
    process, by timing: pytorch/pytorch#188792. Here it made a training run's first loss differ in
    the 6th digit in about 1 process in 10 under load (a Slurm job beside others), so a resumed run
    was not bit-identical to its reference. Settling the dispatch first removes the race (the fix of
    pytorch/pytorch#188791, done from outside); later calls are unchanged, bit for bit."""
    global _vml_settled
    if _vml_settled:
        return
    for dtype in (torch.float32, torch.float64):
        x = torch.full((1,), 0.5, dtype=dtype)
        for name in MKL_VML_OPS:
            getattr(torch, name)(x)
    _vml_settled = True


def set_threads(threads: int) -> None:
    """torch's intra-op threads for this process (at least 1), after settling MKL's dispatch."""
    settle_mkl_dispatch()
    torch.set_num_threads(max(1, int(threads)))


def resolve_device(requested: str | None = "auto") -> torch.device:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' -> a device that exists on this machine, or a one-line error."""
    req = "auto" if requested in (None, "") else str(requested)
    if req == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if req == "cpu":
        return torch.device("cpu")
    m = re.fullmatch(r"cuda(?::(\d+))?", req)
    if not m:
        raise ConfigError(f"device: {req!r} is not a device (allowed: auto, cpu, cuda, cuda:N)")
    if not torch.cuda.is_available():
        why = "this torch has no CUDA support" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise ConfigError(f"device: {req!r} requested but {why} (torch {torch.__version__}); use device: cpu or auto")
    if m.group(1) is not None and int(m.group(1)) >= torch.cuda.device_count():
        raise ConfigError(f"device: {req!r} requested but only {torch.cuda.device_count()} CUDA device(s) are visible")
    return torch.device(req)


def resolve_precision(device: torch.device, precision: str) -> str:
    """'auto' -> bf16 on CUDA (where supported), fp32 on CPU; an unsupported choice is a one-line error."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision: {precision!r} is not allowed (allowed: {', '.join(PRECISIONS)})")
    if precision == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "fp32":
        return precision
    if device.type == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"precision: bf16 is not supported by {torch.cuda.get_device_name(device)}; use fp16 or fp32")
    if not torch.amp.is_autocast_available(device.type):
        raise ConfigError(f"precision: {precision} needs autocast, which torch does not support on {device.type}")
    try:
        with torch.autocast(device_type=device.type, dtype=_DTYPES[precision]):
            pass
    except (RuntimeError, AssertionError) as e:
        raise ConfigError(f"precision: {precision} is not supported on {device.type} ({str(e).splitlines()[0]})") from None
    return precision


def autocast(device: torch.device, precision: str):
    """Autocast context for a resolved precision: matmuls (and SDPA) in bf16/fp16, reductions in fp32.
    On CPU, bf16 runs on the CPU's bf16 units where it has them; fp16 is emulated (slow but exact to
    the format)."""
    precision = resolve_precision(device, precision) if precision == "auto" else precision
    if precision in _DTYPES:
        return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])
    return contextlib.nullcontext()


def grad_scaler(device: torch.device, precision: str):
    """A gradient scaler for fp16 (its 5-bit exponent underflows small gradients); a no-op otherwise."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def peak_flops(device: torch.device) -> float | None:
    """Dense bf16 peak of the GPU, or None (CPU, unknown GPU): then no MFU is reported."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key in sorted(GPU_PEAK_FLOPS, key=len, reverse=True):  # the most specific name first
        if key in name:
            return GPU_PEAK_FLOPS[key]
    return None


def read_model_config(model_dir: str | Path) -> dict:
    """config.json of a trained model folder, or a one-line error naming it."""
    path = Path(model_dir) / "config.json"
    if not path.exists():
        raise CheckpointError(f"{model_dir}: needs config.json and model.safetensors (train the model first)")
    try:
        cfg = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); it may be truncated: retrain the model") from None
    if not isinstance(cfg, dict) or "model" not in cfg or "weights_sha256" not in cfg:
        raise CheckpointError(f"{path} lacks 'model' or 'weights_sha256'; it is not a trained model's config.json")
    return cfg


def load_trained(model_dir: str | Path, device: str | torch.device = "cpu"):
    """Load `model.safetensors` + `config.json`; a mismatch between them is a one-line error."""
    from safetensors.torch import load_file

    from expe.io import sha256_file
    from expe.nn.model import ModelConfig, Transformer

    model_dir = Path(model_dir)
    cfg = read_model_config(model_dir)
    w_path = model_dir / "model.safetensors"
    if not w_path.exists():
        raise CheckpointError(f"{model_dir}: needs config.json and model.safetensors (train the model first)")
    if sha256_file(w_path) != cfg.get("weights_sha256"):
        raise CheckpointError(f"weights {w_path} are corrupt or truncated (checksum mismatch with config.json)")
    try:
        model = Transformer(ModelConfig(**cfg["model"]))
    except TypeError as e:
        raise CheckpointError(f"{model_dir / 'config.json'}: 'model' does not describe a model ({e})") from None
    state = load_file(str(w_path))
    if model.cfg.tie_embeddings:
        state["lm_head.weight"] = state["tok_emb.weight"]
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise CheckpointError(f"weights {w_path} do not match config.json: {first}") from None
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    return model.to(dev).eval()


def check_devices(device: str, gpus: int, precisions: list[str]) -> None:
    """Before any job of a local run: the device exists, enough GPUs for `gpus`, every precision
    is supported there. One-line ConfigError otherwise."""
    dev = resolve_device(device)
    if dev.type == "cuda" and gpus > torch.cuda.device_count():
        raise ConfigError(f"gpus: {gpus} processes need {gpus} GPUs but {torch.cuda.device_count()} are visible")
    for p in dict.fromkeys(precisions):
        resolve_precision(dev, p)
