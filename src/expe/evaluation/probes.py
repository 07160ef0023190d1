"""Is long context used? Two probes for models trained from scratch (beyond the paper, which names
the lack of a long-dependency test as its own limitation).

Repeat retrieval. A held-out span A (`segment` tokens) is placed early in a window, other held-out
text follows, and A is repeated so that the second copy starts exactly D tokens after the first:

    [prefix][A][filler of D - |A| tokens][A]

Copying a span seen before is learned early by small models (induction heads), so the loss on the
second copy drops if, and only if, the model can attend D tokens back. Two gains are reported, in
nats per token of A: against the first copy (the issue's definition; it also moves A to a later
position) and against a control window whose first copy is replaced by other held-out text (the
same positions, no copy: retrieval alone).

Passkey retrieval (Mohtashami & Jaggi 2023): filler, "The pass key is K. Remember it. K is the pass
key.", more filler, "What is the pass key? The pass key is" -- then the key. Scored by the rank of
the true key's log-likelihood among `candidates` keys (chance 1/candidates) and by exact greedy
match (every key token is the argmax given the true prefix, i.e. greedy decoding would produce it).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from expe.runtime import autocast
from expe.data.shards import TokenShard

FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
INTRO = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
         "I will quiz you about the important information there. ")


class Scorer(Protocol):
    def nll(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids -> (B, T-1) negative log-likelihood of x[:, 1:] given its prefix."""

    def last(self, x: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """log p of the last n tokens of each row and whether each is the argmax: (B, n), (B, n)."""


class ModelScorer:
    def __init__(self, model, device: torch.device, precision: str = "fp32"):
        self.model, self.device, self.precision = model, device, precision

    @torch.no_grad()
    def nll(self, x):
        x = x.to(self.device)
        with autocast(self.device, self.precision):
            _, loss = self.model(x[:, :-1], x[:, 1:], reduction="none")
        return loss.float().cpu()

    @torch.no_grad()
    def last(self, x, n):
        x = x.to(self.device)
        with autocast(self.device, self.precision):
            h = self.model.hidden_states(x[:, :-1])[:, -n:]
            logits = self.model.lm_head(h).float()
        lp = F.log_softmax(logits, -1)
        target = x[:, -n:]
        return lp.gather(-1, target[..., None])[..., 0].cpu(), (logits.argmax(-1) == target).cpu()


# --------------------------------------------------------------------------- repeat retrieval

def retrieval_windows(shard: TokenShard, D: int, segment: int, n: int, seed: int = 0, prefix: int = 8):
    """n (probe, control) windows: probe = [prefix][A][filler][A], control = [prefix][B][filler][A],
    the second A starting exactly D tokens after the first copy starts. A, the prefix and the
    filler come from one held-out document; B from another place of the held-out text."""
    if D < segment:
        raise ValueError(f"distance {D} is shorter than the segment ({segment} tokens)")
    need = prefix + D + segment
    docs = [d for d in range(shard.n_docs) if shard.lengths[d] >= need + 1]
    if not docs:
        raise ValueError(f"no held-out document holds {need + 1} tokens for D={D}")
    rng = np.random.default_rng([seed, D])
    probes, controls, first = [], [], prefix
    for i in range(n):
        d = docs[i % len(docs)]
        doc = np.asarray(shard.doc(d), dtype=np.int64)
        s = int(rng.integers(0, len(doc) - need))
        body = doc[s : s + prefix + D]  # prefix, A, filler
        A = body[prefix : prefix + segment]
        probes.append(np.concatenate([body, A]))
        other = docs[(i + 1) % len(docs)] if len(docs) > 1 else d
        o = np.asarray(shard.doc(other), dtype=np.int64)
        t = int(rng.integers(0, len(o) - segment))
        B = o[t : t + segment]
        controls.append(np.concatenate([body[:prefix], B, body[prefix + segment :], A]))
    return np.stack(probes), np.stack(controls), first


def retrieval_probe(scorer: Scorer, shard: TokenShard, L: int, distances: list[float], segment: int = 32,
                    segments: int = 16, batch_size: int = 8, seed: int = 0) -> list[dict[str, Any]]:
    """Per distance D = d * L: mean loss on the first and the second copy of A, on A in the control,
    and the two gains (nats per token), with per-span values for intervals."""
    out = []
    for d in distances:
        D = int(round(d * L))
        probes, controls, first = retrieval_windows(shard, D, segment, segments, seed)
        second = first + D
        # nll[:, j] is the loss of token j + 1: the first token of a span at position p has index p - 1
        first_loss, second_loss, control_loss = [], [], []
        for i in range(0, len(probes), batch_size):
            p = scorer.nll(torch.from_numpy(probes[i : i + batch_size]))
            c = scorer.nll(torch.from_numpy(controls[i : i + batch_size]))
            # the first token of each copy has no copy-able predecessor: score tokens 2..segment
            first_loss += p[:, first : first + segment - 1].mean(1).tolist()
            second_loss += p[:, second : second + segment - 1].mean(1).tolist()
            control_loss += c[:, second : second + segment - 1].mean(1).tolist()
        f, s2, c2 = map(np.asarray, (first_loss, second_loss, control_loss))
        out.append({"distance": D, "distance_L": d, "window": int(probes.shape[1]), "spans": len(f),
                    "loss_first": float(f.mean()), "loss_second": float(s2.mean()), "loss_control": float(c2.mean()),
                    "gain_vs_first": float((f - s2).mean()), "gain_vs_control": float((c2 - s2).mean()),
                    "per_span_gain_vs_control": [round(x, 4) for x in (c2 - s2).tolist()]})
    return out


# --------------------------------------------------------------------------- passkey

def passkey_candidates(true_key: str, n: int, digits: int, rng: np.random.Generator) -> list[str]:
    """The true key plus n - 1 distinct other keys of the same length (the true key exactly once)."""
    keys = [true_key]
    while len(keys) < n:
        k = "".join(str(int(x)) for x in rng.integers(0, 10, digits))
        if k not in keys:
            keys.append(k)
    return keys


def passkey_prompt(tok, key: str, total: int, depth: float, filler_ids: list[int] | None = None) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids) with len(prompt) + len(answer) == total; the key sentence at `depth`
    (0: start, 1: end) of the filler. Filler: the sentences of Mohtashami & Jaggi, or given ids."""
    intro = tok.encode(INTRO)
    needle = tok.encode(f" The pass key is {key}. Remember it. {key} is the pass key. ")
    question = tok.encode(" What is the pass key? The pass key is")
    answer = tok.encode(f" {key}")
    room = total - len(intro) - len(needle) - len(question) - len(answer)
    if room < len(needle):  # a short window: the task description is dropped, never the needle or question
        room += len(intro)
        intro = []
    if room < 0:
        raise ValueError(f"not run: a passkey prompt needs at least {total - room} tokens, the window has {total}")
    if filler_ids is None:
        unit = tok.encode(FILLER)
        filler_ids = (unit * (room // max(1, len(unit)) + 2))
    filler = list(filler_ids[:room])
    if len(filler) < room:
        raise ValueError(f"not enough filler text: {len(filler)} of {room} tokens")
    cut = int(round(depth * room))
    return intro + filler[:cut] + needle + filler[cut:] + question, answer


def passkey_probe(scorer: Scorer, tok, shard: TokenShard | None, L: int, multiples: list[int], trials: int = 10,
                  candidates: int = 10, digits: int = 4, filler: str = "corpus", seed: int = 0) -> list[dict[str, Any]]:
    out = []
    for k in multiples:
        total = k * L
        rng = np.random.default_rng([seed, k])
        ranks, greedy = [], []
        try:
            passkey_prompt(tok, "0" * digits, total, 0.5, [0] * total)
        except ValueError as e:
            out.append({"ev": k, "length": total, "status": str(e)})
            continue
        for t in range(trials):
            key = "".join(str(int(x)) for x in rng.integers(0, 10, digits))
            keys = passkey_candidates(key, candidates, digits, rng)
            depth = float(rng.uniform(0.1, 0.9))
            fill = None
            if filler == "corpus":
                docs = [d for d in range(shard.n_docs) if shard.lengths[d] > total]
                d = docs[t % len(docs)]
                s = int(rng.integers(0, shard.lengths[d] - total))
                fill = [int(x) for x in shard.doc(d)[s : s + total]]
            prompt, _ = passkey_prompt(tok, key, total, depth, fill)
            rows = [prompt + tok.encode(f" {c}") for c in keys]
            width = max(map(len, rows))
            lens = {len(r) for r in rows}
            if len(lens) != 1:  # every candidate key has the same number of tokens (digits are split)
                rows = [r + [r[-1]] * (width - len(r)) for r in rows]
            n_ans = len(rows[0]) - len(prompt)
            lp, is_max = scorer.last(torch.tensor(rows), n_ans)
            score = lp.sum(1)
            ranks.append(int((score[1:] >= score[0]).sum()) + 1)  # 1: the true key (row 0) strictly highest
            greedy.append(bool(is_max[0].all()))
        r = np.asarray(ranks)
        out.append({"ev": k, "length": total, "status": "ok", "trials": trials, "candidates": candidates, "filler": filler,
                    "accuracy": float((r == 1).mean()), "chance": 1 / candidates, "mean_rank": float(r.mean()),
                    "greedy_exact": float(np.mean(greedy)), "ranks": ranks})
    return out


# --------------------------------------------------------------------------- position values in low precision

def distinct_positions(encoding, T: int, dtype: torch.dtype) -> int | None:
    """How many of the positions 0 .. T-1 an encoding still tells apart once the values that carry
    position (ExPE's p_n, RoPE's cos/sin, the sinusoidal table, ALiBi's distance biases) are cast
    to `dtype`; None for NoPE (no position values)."""
    v = encoding.position_values(T)
    if v is None:
        return None
    return int(len(torch.unique(v.to(dtype).float(), dim=0)))


# --------------------------------------------------------------------------- command-line entry points

def run_probes(kinds: dict[str, dict[str, Any]], model_dir, data_dir, split: str = "test", device: str = "auto",
               precision: str = "fp32", tokenizer: str | None = None, threads: int = 1) -> dict[str, dict[str, Any]]:
    """Run each probe of `kinds` (name -> its settings) on one loaded model."""
    from expe.evaluation.extrapolation import load_for_eval
    from expe.runtime import resolve_precision

    model, shard, dev = load_for_eval(model_dir, data_dir, split, device, None, threads)
    scorer = ModelScorer(model, dev, resolve_precision(dev, precision))
    L = model.cfg.seq_len
    out = {}
    for kind, kw in kinds.items():
        if kind == "retrieval":
            rows = retrieval_probe(scorer, shard, L, **kw)
        else:
            from expe.data.tokenizer import Tokenizer

            rows = passkey_probe(scorer, Tokenizer(tokenizer), shard, L, **kw)
        out[kind] = {"probe": kind, "model_dir": str(model_dir), "train_length": L, "split": split,
                     "precision": scorer.precision, "settings": kw, "results": rows}
    return out
