"""Our checkpoints as an lm-evaluation-harness model, registered as "expe" (lm-eval's own
`@register_model` pattern, as its `huggingface.py`).

Python:   lm = ExpeLM(model_dir=..., tokenizer=...); lm_eval.simple_evaluate(model=lm, tasks=[...])
lm-eval:  python -m expe.evaluation.lm_eval_cli run --model expe --model_args model_dir=DIR,tokenizer=FILE --tasks arc_easy

Importing this module imports lm-eval and torch; the workflow's light steps never do.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from expe.data.tokenizer import Tokenizer
from expe.errors import ExpeError
from expe.nn.registry import parse_overrides
from expe.runtime import load_trained, resolve_device

log = logging.getLogger("expe.benchmarks")


@register_model("expe")
class ExpeLM(TemplateLM):
    """A trained ExPE-package checkpoint (model.safetensors + config.json) and its tokenizer.

    max_length: the evaluation window; contexts are truncated on the left to fit it
    (default: the training length). pe options (e.g. scale=0.5) are inference-time settings.
    """

    def __init__(self, model_dir: str, tokenizer: str, batch_size: int | str = 8, device: str | None = "auto",
                 max_length: int | None = None, max_gen_toks: int = 128, max_batch_size: int | None = None,
                 **pe: Any):
        """lm-eval's CLI passes batch_size, max_batch_size and device itself (device="cuda:0" by
        default, even without a GPU: then the CPU is used, with a warning); 'auto' picks CUDA
        when available and batch size 8."""
        super().__init__()
        if device in (None, "auto"):
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif str(device).startswith("cuda") and not torch.cuda.is_available():
            log.warning("device %s requested (lm-eval's default) but CUDA is not available: using the CPU", device)
            device = "cpu"
        self.model = load_trained(model_dir, device=resolve_device(str(device)))
        if pe:  # strings from lm-eval's model_args, or a job's settings: typed and checked by the registry
            self.model.pe.set_inference(**parse_overrides(self.model.cfg.pe["name"], pe))
        self.tok = Tokenizer(tokenizer)
        if self.tok.vocab_size != self.model.cfg.vocab_size:
            raise ExpeError(
                f"tokenizer/model vocabulary mismatch: {tokenizer} has {self.tok.vocab_size} ids, "
                f"model {model_dir} has {self.model.cfg.vocab_size}"
            )
        self._device = torch.device(device)
        self.batch_size = 8 if str(batch_size).startswith("auto") else int(batch_size)
        self.max_length = int(max_length or self.model.cfg.seq_len)
        self.max_gen_toks = int(max_gen_toks)

    @property
    def eot_token_id(self) -> int:
        return self.tok.eos_id

    @property
    def prefix_token_id(self) -> int:
        return self.tok.bos_id

    @property
    def device(self):
        return self._device

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        return self.tok.encode(string)

    def tok_decode(self, tokens) -> str:
        return self.tok.decode(tokens)

    @torch.no_grad()
    def _logprobs(self, inputs: list[list[int]], positions: list[int] | None = None) -> list[torch.Tensor]:
        """Log-softmax over the vocabulary at the last `positions[i]` positions of each (right-padded)
        input (all positions when None). Only those positions go through the output head."""
        width = max(len(x) for x in inputs)
        batch = torch.zeros(len(inputs), width, dtype=torch.long)
        for i, x in enumerate(inputs):
            batch[i, : len(x)] = torch.tensor(x)
        h = self.model.hidden_states(batch.to(self._device))
        rows, cols, sizes = [], [], []
        for i, x in enumerate(inputs):
            k = len(x) if positions is None else positions[i]
            rows += [i] * k
            cols += range(len(x) - k, len(x))
            sizes.append(k)
        logits = self.model.lm_head(h[rows, cols]).float()
        return list(F.log_softmax(logits, dim=-1).cpu().split(sizes))

    def _windows(self, ctx: list[int], cont: list[int]) -> list[tuple[list[int], list[int]]]:
        """(input, scored targets) windows of at most max_length tokens: the context is cut on
        the left; a continuation longer than the window is scored in several windows."""
        full, out, b = ctx + cont, [], len(ctx) + len(cont)
        while b > len(ctx):
            a = max(len(ctx), b - self.max_length)
            out.append((full[max(0, b - 1 - self.max_length) : b - 1], full[a:b]))
            b = a
        return out

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
        """Sum of log p(continuation | context), and whether greedy decoding gives it.

        Requests whose model input is identical (the same context with one-token continuations,
        as in MMLU's four choices) share one forward, as lm-eval's own HF model groups them."""
        pieces = [(r, w) for r, (_, ctx, cont) in enumerate(requests) for w in self._windows(ctx, cont)]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (_, (inp, _)) in enumerate(pieces):
            groups.setdefault(tuple(inp), []).append(i)
        keys = sorted(groups, key=lambda k: -len(k))
        scores = [0.0] * len(requests)
        greedy = [True] * len(requests)
        for start in tqdm(range(0, len(keys), self.batch_size), disable=disable_tqdm, desc="loglikelihood"):
            chunk = keys[start : start + self.batch_size]
            need = [max(len(pieces[i][1][1]) for i in groups[k]) for k in chunk]
            for key, lp in zip(chunk, self._logprobs([list(k) for k in chunk], need)):
                for i in groups[key]:
                    r, (_, target) = pieces[i]
                    tail = lp[len(lp) - len(target) :]
                    t = torch.tensor(target)
                    scores[r] += tail.gather(1, t[:, None]).sum().item()
                    greedy[r] &= bool((tail.argmax(-1) == t).all())
        for r, req in enumerate(requests):
            self.cache_hook.add_partial("loglikelihood", req[0], (scores[r], greedy[r]))
        return list(zip(scores, greedy))

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        results = []
        for req in tqdm(requests, disable=disable_tqdm, desc="loglikelihood_rolling"):
            (text,) = req.args
            windows = [
                make_disjoint_window(w)
                for w in get_rolling_token_windows(
                    self.tok_encode(text), self.prefix_token_id, self.max_length, context_len=1
                )
            ]
            scores = self._loglikelihood_tokens([(None, c, t) for c, t in windows], disable_tqdm=True)
            results.append(sum(s for s, _ in scores))
        return results

    @torch.no_grad()
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy decoding until a stop string or max_gen_toks (no KV cache: the paper's models have none)."""
        outputs = []
        for req in tqdm(requests, disable=disable_tqdm, desc="generate_until"):
            context, gen_kwargs = req.args
            until = gen_kwargs.get("until") or [self.tok_decode([self.eot_token_id])]
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(gen_kwargs.get("max_gen_toks", self.max_gen_toks))
            ids = self.tok_encode(context) or [self.prefix_token_id]
            new: list[int] = []
            text = ""
            for _ in range(max_new):
                window = (ids + new)[-self.max_length :]
                nxt = int(self._logprobs([window], [1])[0][-1].argmax())
                if nxt == self.eot_token_id:
                    break
                new.append(nxt)
                text = self.tok_decode(new)
                if any(s in text for s in until):
                    break
            for s in until:
                text = text.split(s)[0]
            outputs.append(text)
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
        return outputs
