"""heldout_continuation ("held-out continuation choice"): this package's OWN multiple-choice task,
built from the held-out test documents of whatever corpus was trained on, so that the lm-eval
stage always has something to run offline. It is NOT one of the paper's benchmarks (HellaSwag,
MMLU, ARC) and must never be reported as one; it is a HellaSwag-shaped sanity check.

Each item: a context of `context_tokens` (k) tokens at a random place of a held-out document, and
`choices` continuations of `continuation_tokens` (m) tokens each: the TRUE one (the m tokens that
follow the context in the document) and `choices - 1` distractors (the m tokens that follow some
OTHER k-token window of the held-out text: another document, or the same document at least k + m
tokens away from the item's context and continuation; never the same text as another choice).
The index of the true choice is uniformly random.

    docs = [shard.doc(i) for i in range(shard.n_docs)]        # e.g. from a TokenShard of the test split
    items = build_items(docs, tokenizer.decode, ContinuationSettings(n_items=500, context_tokens=64,
                                                                    continuation_tokens=16, seed=0))
    yaml_path = write_task(out_dir, items, settings)
    tm = lm_eval.tasks.TaskManager(include_path=str(out_dir))
    lm_eval.simple_evaluate(model=lm, tasks=[TASK_NAME], task_manager=tm)

How texts are joined. Context and continuation are decoded from token ids, the continuation in
its own left context: context = decode(ctx_ids), continuation = decode(ctx_ids + cont_ids) minus
its prefix `context`; so context + continuation == decode(ctx_ids + cont_ids) exactly, and a
SentencePiece word-initial space ("\u2581the") stays on the continuation (decoding cont_ids alone
may drop it). A window where this does not hold (a multi-byte character cut at the boundary by
byte-fallback pieces), or where the continuation's end cuts a character (decode(window) is not a
prefix of decode(window + next token)), or whose context or continuation decodes to "", is not
used, for items and distractors alike (a distractor is the continuation of another window, decoded
the same way, so nothing in its form tells it from the true one). For a character tokenizer the
continuation is simply decode(cont_ids).

lm-eval 0.4.13 (ConfigurableTask) turns a multiple_choice doc into one loglikelihood request per
choice: (doc_to_text(doc), target_delimiter + choice). With zero shots the context is exactly
doc_to_text(doc) (build_qa_turn adds nothing after the evaluated doc's text), and doc_to_text,
doc_to_choice and doc_to_target given as column names return doc[column] verbatim (no Jinja
rendering, no whitespace trimming). We write `target_delimiter: ""` (the default is " "), so each
request is (context, continuation), exactly as in the document. (TemplateLM._encode_pair then moves
trailing whitespace of the context onto the continuation before encoding: the text is unchanged.)
With num_fewshot > 0 the examples come from the same file (`fewshot_split: test`; lm-eval leaves
the evaluated doc out), each written as context + true continuation + "\n\n".

Data file path: lm-eval passes `dataset_kwargs` to `datasets.load_dataset("json", ...)` untouched,
and `datasets` resolves a relative `data_files` path against the process's current working
directory, not the YAML's folder; so the YAML holds the data file's absolute path (the task folder
cannot be moved without writing it again). `datasets` reads data_files as glob patterns, so a
folder whose path holds *, ? or [ is refused.

Deterministic: the same documents, decode function, settings (seed included) and numpy version
give byte-identical files (for the same output folder, whose absolute path is in the YAML).
Only numpy and the standard library are imported here; lm-eval is not needed to build the task.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

TASK_NAME = "heldout_continuation"
TASK_LABEL = "held-out continuation choice"
TASK_VERSION = 1.0
DATA_FILE = f"{TASK_NAME}.jsonl"
YAML_FILE = f"{TASK_NAME}.yaml"
FIELDS = ("id", "context", "choices", "label", "doc", "start", "sources")

Decode = Callable[[list[int]], str]


class ContinuationTaskError(ValueError):
    """Bad settings or a held-out corpus too small for them (one-line message)."""


@dataclass(frozen=True)
class ContinuationSettings:
    n_items: int = 500
    context_tokens: int = 64  # k
    continuation_tokens: int = 16  # m
    choices: int = 4
    seed: int = 0

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ContinuationTaskError(f"{TASK_NAME}.{f.name}: must be an integer, got {v!r}")
            object.__setattr__(self, f.name, int(v))
        for name, low in (("n_items", 1), ("context_tokens", 1), ("continuation_tokens", 1), ("choices", 2),
                          ("seed", 0)):
            if getattr(self, name) < low:
                raise ContinuationTaskError(f"{TASK_NAME}.{name}: must be at least {low}, got {getattr(self, name)}")

    @classmethod
    def of(cls, settings: "ContinuationSettings | Mapping[str, Any]") -> "ContinuationSettings":
        if isinstance(settings, cls):
            return settings
        unknown = set(settings) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ContinuationTaskError(f"{TASK_NAME}: unknown settings {sorted(unknown)}")
        return cls(**settings)

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def _window(doc: np.ndarray, s: int, k: int, m: int, decode: Decode) -> tuple[str, str] | None:
    """(context, continuation) texts of the k + m tokens of `doc` from `s`, or None when the window
    cannot be cut cleanly (see the module docstring)."""
    ids = [int(t) for t in doc[s : s + k + m + 1]]
    ctx = decode(ids[:k])
    full = decode(ids[: k + m])
    if not ctx or len(full) <= len(ctx) or not full.startswith(ctx):
        return None
    if len(ids) > k + m and not decode(ids).startswith(full):
        return None  # the continuation's last token ends inside a character
    return ctx, full[len(ctx) :]


class _Windows:
    """All k + m token windows of the corpus, numbered 0 .. total-1 (document by document)."""

    def __init__(self, docs: Sequence[np.ndarray], k: int, m: int):
        self.docs = [np.asarray(d) for d in docs]
        for i, d in enumerate(self.docs):
            if d.ndim != 1 or (d.size and not np.issubdtype(d.dtype, np.integer)):
                raise ContinuationTaskError(f"{TASK_NAME}: document {i} is not a 1-d array of token ids")
        counts = np.array([max(0, len(d) - k - m + 1) for d in self.docs], dtype=np.int64)
        self.cum = np.concatenate([[0], np.cumsum(counts)])
        self.total = int(self.cum[-1])

    def locate(self, w: int) -> tuple[int, int]:
        d = int(np.searchsorted(self.cum, w, side="right")) - 1
        return d, int(w - self.cum[d])


def build_items(docs: Sequence[np.ndarray | Sequence[int]], decode: Decode,
                settings: ContinuationSettings | Mapping[str, Any]) -> list[dict[str, Any]]:
    """The task's items from the held-out documents (token-id arrays, e.g. TokenShard.doc(i)) and the
    tokenizer's decode(list[int]) -> str.

    Context windows are drawn uniformly over all k + m token windows of the corpus (so a document
    weighs by its length), without repeating a window; distractors are drawn the same way. Each item:
      id, context, choices (list of str), label (index of the true choice),
      doc, start       where the context is: decode(docs[doc][start : start + k]) == context
      sources          [doc, token offset] of each choice's first token (the true one: [doc, start + k])
    """
    st = ContinuationSettings.of(settings)
    k, m, n_choices = st.context_tokens, st.continuation_tokens, st.choices
    win = _Windows(docs, k, m)
    if win.total == 0:
        raise ContinuationTaskError(
            f"{TASK_NAME}: no held-out document has {k + m} tokens (context_tokens {k} + continuation_tokens {m})")
    if st.n_items > win.total:
        raise ContinuationTaskError(
            f"{TASK_NAME}: n_items {st.n_items} exceeds the {win.total} windows of {k + m} tokens in the held-out text")
    rng = np.random.Generator(np.random.PCG64(st.seed))
    cache: dict[int, tuple[str, str] | None] = {}

    def texts(w: int) -> tuple[str, str] | None:
        if w not in cache:
            d, s = win.locate(w)
            cache[w] = _window(win.docs[d], s, k, m, decode)
        return cache[w]

    gap = k + m  # a same-document distractor stays this far outside the item's k + m tokens
    items: list[dict[str, Any]] = []
    used: set[int] = set()
    tries = 0
    while len(items) < st.n_items:
        tries += 1
        if tries > 100 * st.n_items + 1000:
            raise ContinuationTaskError(
                f"{TASK_NAME}: found only {len(items)} of {st.n_items} usable context windows "
                f"({k} + {m} tokens) in the held-out text; lower n_items or the token counts")
        w = int(rng.integers(win.total))
        if w in used:
            continue
        used.add(w)
        pair = texts(w)
        if pair is None:
            continue
        d, s = win.locate(w)
        context, true = pair
        chosen, seen, attempts = [], {true}, 0
        while len(chosen) < n_choices - 1:
            attempts += 1
            if attempts > 1000 + 100 * n_choices:
                raise ContinuationTaskError(
                    f"{TASK_NAME}: could not draw {n_choices - 1} distinct distractors for a context (document {d}); "
                    "the held-out text is too small or too repetitive for these settings")
            dw = int(rng.integers(win.total))
            dd, ds = win.locate(dw)
            t = ds + k  # the distractor's first token
            if dd == d and not (t + m <= s - gap or t >= s + k + m + gap):
                continue
            other = texts(dw)
            if other is None or other[1] in seen:
                continue
            seen.add(other[1])
            chosen.append((other[1], [dd, t]))
        label = int(rng.integers(n_choices))
        chosen.insert(label, (true, [d, s + k]))
        items.append({"id": len(items), "context": context, "choices": [c for c, _ in chosen], "label": label,
                      "doc": d, "start": s, "sources": [src for _, src in chosen]})
    return items


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _q(s: str) -> str:
    """A YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(s)


def task_yaml(data_file: Path, settings: ContinuationSettings, data_sha256: str) -> str:
    meta = "".join(f"  {k}: {v}\n" for k, v in settings.as_dict().items())
    return (
        f"# {TASK_NAME} ({TASK_LABEL}): the ExPE reproduction package's own sanity task, built from the\n"
        "# held-out test documents. NOT one of the paper's benchmarks. Written by\n"
        "# expe.evaluation.continuation_task; do not edit (rewrite it with write_task).\n"
        f"task: {TASK_NAME}\n"
        f"task_alias: {_q(TASK_LABEL)}\n"
        "dataset_path: json\n"
        "dataset_name: null\n"
        "dataset_kwargs:\n"
        "  data_files:\n"
        f"    test: {_q(str(data_file))}\n"
        "test_split: test\n"
        "fewshot_split: test\n"
        "output_type: multiple_choice\n"
        "doc_to_text: context\n"
        "doc_to_choice: choices\n"
        "doc_to_target: label\n"
        'target_delimiter: ""\n'
        "metric_list:\n"
        "  - metric: acc\n"
        "    aggregation: mean\n"
        "    higher_is_better: true\n"
        "  - metric: acc_norm\n"
        "    aggregation: mean\n"
        "    higher_is_better: true\n"
        "metadata:\n"
        f"  version: {TASK_VERSION}\n"
        f"  label: {_q(TASK_LABEL)}\n"
        f"{meta}"
        f"  data_sha256: {_q(data_sha256)}\n"
    )


def write_task(out_dir: str | os.PathLike, items: Sequence[Mapping[str, Any]],
               settings: ContinuationSettings | Mapping[str, Any]) -> Path:
    """Write `<out_dir>/heldout_continuation.jsonl` (one item a line) and then
    `<out_dir>/heldout_continuation.yaml` (the lm-eval task, pointing at the data file by absolute
    path), each atomically; returns the YAML's path. Load with TaskManager(include_path=out_dir)."""
    st = ContinuationSettings.of(settings)
    if not items:
        raise ContinuationTaskError(f"{TASK_NAME}: no items to write")
    out = Path(out_dir).expanduser().absolute()
    if any(c in str(out) for c in "*?["):
        raise ContinuationTaskError(
            f"{TASK_NAME}: output folder {out}: `datasets` reads data_files as glob patterns; use a path without *, ? or [")
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, item in enumerate(items):
        missing = [f for f in FIELDS if f not in item]
        if missing:
            raise ContinuationTaskError(f"{TASK_NAME}: item {i} lacks {missing}")
        choices, label = list(item["choices"]), item["label"]
        if len(choices) != st.choices or not isinstance(label, int) or not 0 <= label < len(choices):
            raise ContinuationTaskError(f"{TASK_NAME}: item {i}: needs {st.choices} choices and a label index into them")
        lines.append(json.dumps({f: item[f] for f in FIELDS}, ensure_ascii=True, separators=(", ", ": ")))
    data = ("\n".join(lines) + "\n").encode("ascii")
    _atomic_write(out / DATA_FILE, data)
    text = task_yaml(out / DATA_FILE, st, hashlib.sha256(data).hexdigest())
    _atomic_write(out / YAML_FILE, text.encode("utf-8"))
    return out / YAML_FILE


def build_task(out_dir: str | os.PathLike, docs: Sequence[np.ndarray | Sequence[int]], decode: Decode,
               settings: ContinuationSettings | Mapping[str, Any]) -> Path:
    """build_items + write_task; returns the YAML's path."""
    st = ContinuationSettings.of(settings)
    return write_task(out_dir, build_items(docs, decode, st), st)
