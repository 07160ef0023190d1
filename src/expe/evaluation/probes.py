"""Is long context used? Two probes for models trained from scratch (beyond the paper, which names
the lack of a long-dependency test as its own limitation).

Repeat retrieval. A held-out span A (`segment` tokens, L/8 by default) is placed after a `prefix`
(L/8 by default) of held-out text, other held-out text follows, and A is repeated so that the second
copy starts exactly D tokens after the first:

    [prefix][A][filler of D - |A| tokens][A]

A distance whose whole window fits in L (D = L/4: 8 + 16 + 8 = 32 tokens at L = 64) is the model's
positive control: a model that does not copy there cannot be said to fail beyond L.

Copying a span seen before is learned early by small models (induction heads), so the loss on the
second copy drops if, and only if, the model can attend D tokens back. Two gains are reported, in
nats per token of A: against the first copy (the issue's definition; it also moves A to a later
position) and against a control window whose first copy is replaced by other held-out text (the
same positions, no copy: retrieval alone).

Passkey retrieval (Mohtashami & Jaggi 2023): filler, "The pass key is K. Remember it. K is the pass
key.", more filler, "What is the pass key? The pass key is" -- then the key. Scored by the rank of
the true key's log-likelihood among `candidates` keys (chance 1/candidates) and by exact greedy
match (every key token is the argmax given the true prefix, i.e. greedy decoding would produce it).
The keys are frequent words of the training split by default (`word_pool`): a model can only copy a
token whose embedding it has learned, and 4-digit keys are practically absent from many corpora.

Every random choice (spans, keys, depths, filler) is drawn from the model's training seed mixed with
the length or distance: the trials of different seeds are independent, and models with the same seed
see the same prompts (paired).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from expe.config.resolve import retrieval_prefix, retrieval_segment
from expe.data.shards import TokenShard
from expe.runtime import autocast

FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
INTRO = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
         "I will quiz you about the important information there. ")
NEEDLE = " The pass key is {key}. Remember it. {key} is the pass key. "
QUESTION = " What is the pass key? The pass key is"


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


def retrieval_probe(scorer: Scorer, shard: TokenShard, L: int, distances: list[float], segment: int | None = None,
                    prefix: int | None = None, segments: int = 16, batch_size: int = 8, seed: int = 0) -> list[dict[str, Any]]:
    """Per distance D = d * L: mean loss on the first and the second copy of A, on A in the control,
    and the two gains (nats per token), with per-span values for intervals. segment, prefix None: L/8."""
    segment, prefix = retrieval_segment(L, segment), retrieval_prefix(L, prefix)
    out = []
    for d in distances:
        D = int(round(d * L))
        probes, controls, first = retrieval_windows(shard, D, segment, segments, seed, prefix)
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
        out.append({"distance": D, "distance_L": d, "window": int(probes.shape[1]), "segment": segment,
                    "prefix": prefix, "inside_L": int(probes.shape[1]) <= L, "spans": len(f),
                    "loss_first": float(f.mean()), "loss_second": float(s2.mean()), "loss_control": float(c2.mean()),
                    "gain_vs_first": float((f - s2).mean()), "gain_vs_control": float((c2 - s2).mean()),
                    "per_span_gain_vs_control": [round(x, 4) for x in (c2 - s2).tolist()]})
    return out


# --------------------------------------------------------------------------- passkey

def word_pool(tok, shard: TokenShard, n: int) -> list[str]:
    """The n most frequent single-token words of `shard` (the training split: tokens whose embeddings the
    model has learned): a token that starts a word and is >= 3 lower-case letters, a whole word (followed
    by a new word or punctuation in >= 90% of its occurrences, unlike a prefix such as "sta" of "sta|y"),
    and none of the prompt's own tokens (no key is "the" or "pass")."""
    pieces = tok.pieces()  # each id's text, a word boundary as a leading space
    ids = np.concatenate([np.asarray(shard.doc(d), dtype=np.int64) for d in range(shard.n_docs)])
    count = np.bincount(ids, minlength=len(pieces))
    starts = np.array([p[:1] == " " or not p[:1].isalpha() for p in pieces])
    whole = np.bincount(ids[:-1][starts[ids[1:]]], minlength=len(pieces))
    own = set(tok.encode(INTRO + NEEDLE.format(key="") + QUESTION))
    out = []
    for i in np.argsort(-count, kind="stable"):
        w = pieces[i]
        if count[i] == 0 or len(out) == n:
            break
        if (w[:1] == " " and len(w) > 3 and w[1:].isalpha() and w[1:].islower() and whole[i] >= 0.9 * count[i]
                and i not in own and tok.encode(w) == [i]):
            out.append(w[1:])
    return out


def passkey_candidates(true_key: str, n: int, digits: int, rng: np.random.Generator) -> list[str]:
    """The true key plus n - 1 distinct other keys of the same length (the true key exactly once)."""
    keys = [true_key]
    while len(keys) < n:
        k = "".join(str(int(x)) for x in rng.integers(0, 10, digits))
        if k not in keys:
            keys.append(k)
    return keys


def draw_keys(rng: np.random.Generator, n: int, words: list[str] | None, digits: int = 4) -> list[str]:
    """n distinct keys, the true one first: n words of the pool without replacement, or digit strings.
    The true key is uniform among the n, so a scorer blind to the needle ranks it first with
    probability at most 1/n, whatever its preferences among keys."""
    if words is None:
        return passkey_candidates("".join(str(int(x)) for x in rng.integers(0, 10, digits)), n, digits, rng)
    return [words[i] for i in rng.choice(len(words), n, replace=False)]


def passkey_prompt(tok, key: str, total: int, depth: float, filler_ids: list[int] | None = None) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids) with len(prompt) + len(answer) == total; the key sentence at `depth`
    (0: start, 1: end) of the filler. Filler: the sentences of Mohtashami & Jaggi, or given ids."""
    intro = tok.encode(INTRO)
    needle = tok.encode(NEEDLE.format(key=key))
    question = tok.encode(QUESTION)
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
                  candidates: int = 10, words: list[str] | None = None, digits: int = 4, filler: str = "corpus",
                  seed: int = 0) -> list[dict[str, Any]]:
    """Per length ev x L: rank and greedy accuracy of `trials` prompts. words: the key pool (`word_pool`);
    None: keys of `digits` digits."""
    out = []
    for k in multiples:
        total = k * L
        rng = np.random.default_rng([seed, k])
        ranks, greedy = [], []
        if words is not None and len(words) < candidates:
            out.append({"ev": k, "length": total, "status": f"not run: {len(words)} word keys in the pool, fewer than "
                        f"{candidates} candidates"})
            continue
        longest = max(words, key=lambda w: len(tok.encode(f" {w}"))) if words else "0" * digits
        try:
            passkey_prompt(tok, longest, total, 0.5, [0] * total)
        except ValueError as e:
            out.append({"ev": k, "length": total, "status": str(e)})
            continue
        for t in range(trials):
            keys = draw_keys(rng, candidates, words, digits)
            key = keys[0]
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
            if len(lens) != 1:  # keys of different token counts: pad (digits are split into one token each)
                rows = [r + [r[-1]] * (width - len(r)) for r in rows]
            n_ans = len(rows[0]) - len(prompt)
            lp, is_max = scorer.last(torch.tensor(rows), n_ans)
            score = lp.sum(1)
            ranks.append(int((score[1:] >= score[0]).sum()) + 1)  # 1: the true key (row 0) strictly highest
            greedy.append(bool(is_max[0].all()))
        r = np.asarray(ranks)
        out.append({"ev": k, "length": total, "status": "ok", "trials": trials, "candidates": candidates, "filler": filler,
                    "keys": "words" if words is not None else "digits",
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
    """Run each probe of `kinds` (name -> its settings) on one loaded model, its prompts drawn from the
    model's training seed (config.json)."""
    from pathlib import Path

    from expe.evaluation.extrapolation import load_for_eval
    from expe.io import read_json
    from expe.runtime import resolve_precision

    model, shard, dev = load_for_eval(model_dir, data_dir, split, device, None, threads)
    scorer = ModelScorer(model, dev, resolve_precision(dev, precision))
    L = model.cfg.seq_len
    seed = int(read_json(Path(model_dir) / "config.json")["seed"])
    out = {}
    for kind, kw in kinds.items():
        extra: dict[str, Any] = {}
        if kind == "retrieval":
            rows = retrieval_probe(scorer, shard, L, seed=seed, **kw)
        else:
            from expe.data.tokenizer import Tokenizer

            tok = Tokenizer(tokenizer)
            kw = dict(kw)
            keys, pool = kw.pop("keys", "digits"), kw.pop("pool", None)
            words = word_pool(tok, TokenShard(data_dir, "train"), pool) if keys == "words" else None
            extra = {"key_pool": words, "key_pool_split": "train"} if words is not None else {}
            rows = passkey_probe(scorer, tok, shard, L, words=words, seed=seed, **kw)
        out[kind] = {"probe": kind, "model_dir": str(model_dir), "train_length": L, "split": split, "seed": seed,
                     "precision": scorer.precision, "settings": kinds[kind], **extra, "results": rows}
    return out
