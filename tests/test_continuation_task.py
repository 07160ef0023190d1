"""heldout_continuation: our own multiple-choice task from held-out documents, run through lm-eval offline.

A character tokenizer (token id = code point, decode = join of characters) stands in for
sentencepiece, and the corpus is random "words", so a context-blind scorer has nothing to exploit.
"""

import math
import os

import numpy as np
import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from expe.evaluation.continuation_task import (  # noqa: E402
    DATA_FILE,
    TASK_LABEL,
    TASK_NAME,
    YAML_FILE,
    ContinuationSettings,
    ContinuationTaskError,
    build_items,
    write_task,
)

SETTINGS = ContinuationSettings(n_items=200, context_tokens=40, continuation_tokens=20, choices=4, seed=0)
N = SETTINGS.n_items
CHANCE = 1 / SETTINGS.choices
# unigram acc over N items is Binomial(N, 1/4)/N if it cannot tell the true continuation: sd ~0.031;
# we allow 4 sd (|acc - 0.25| <= ~0.122), which a scorer at chance leaves with probability < 1e-4.
TOLERANCE = 4 * math.sqrt(CHANCE * (1 - CHANCE) / N)


def decode(ids):
    return "".join(chr(int(i)) for i in ids)


def random_word_corpus(n_docs=30, seed=1):
    rng = np.random.default_rng(seed)
    letters = list("abcdefghijklmnopqrstuvwxyz")
    docs = []
    for _ in range(n_docs):
        words = ["".join(rng.choice(letters, rng.integers(2, 9))) for _ in range(rng.integers(40, 120))]
        docs.append(np.array([ord(c) for c in " ".join(words) + "."], dtype=np.uint16))
    return docs


@pytest.fixture(scope="module")
def corpus():
    return random_word_corpus()


@pytest.fixture(scope="module")
def items(corpus):
    return build_items(corpus, decode, SETTINGS)


@pytest.fixture(scope="module")
def task_dir(items, tmp_path_factory):
    d = tmp_path_factory.mktemp("heldout_task")
    write_task(d, items, SETTINGS)
    return d


@pytest.fixture(scope="module")
def task_manager(task_dir):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(task_dir), include_defaults=False)


@pytest.fixture(scope="module")
def scorers(items, corpus):
    """Two tiny lm-eval models: an oracle that knows each context's true continuation, and a
    unigram model that scores a continuation by its characters' corpus frequencies, blind to the context."""
    from lm_eval.api.model import LM

    class _Scorer(LM):
        def loglikelihood(self, requests, disable_tqdm=False):
            return [(self.score(*r.args), False) for r in requests]

        def loglikelihood_rolling(self, requests, disable_tqdm=False):
            raise NotImplementedError

        def generate_until(self, requests, disable_tqdm=False):
            raise NotImplementedError

    truth = {it["context"]: it["choices"][it["label"]] for it in items}
    assert len(truth) == len(items)

    class Oracle(_Scorer):
        def score(self, context, continuation):
            return 0.0 if truth[context] == continuation else -100.0

    chars, counts = np.unique(np.concatenate(corpus), return_counts=True)
    logp = {chr(int(c)): math.log(n / counts.sum()) for c, n in zip(chars, counts)}

    class Unigram(_Scorer):
        def score(self, context, continuation):
            return sum(logp[c] for c in continuation)

    return Oracle(), Unigram()


def test_the_written_task_loads_offline_in_lm_eval_and_its_docs_are_the_items(task_dir, task_manager, items):
    assert sorted(p.name for p in task_dir.iterdir()) == [DATA_FILE, YAML_FILE]  # no temporary files left
    task = task_manager.load([TASK_NAME])["tasks"][TASK_NAME]
    docs = list(task.test_docs())
    assert docs == items
    assert task.config.target_delimiter == "" and task.config.output_type == "multiple_choice"
    assert task.config.task_alias == TASK_LABEL and task.config.metadata["label"] == TASK_LABEL
    for doc in docs[:5]:  # lm-eval asks for each choice exactly after the context, as in the document
        ctx = task.fewshot_context(doc, 0)
        reqs = task.construct_requests(doc, ctx, metadata=(TASK_NAME, doc["id"], 1))
        assert [r.args for r in reqs] == [(doc["context"], c) for c in doc["choices"]]


def test_each_item_has_exactly_one_true_continuation_the_text_after_its_context(items, corpus):
    k, m = SETTINGS.context_tokens, SETTINGS.continuation_tokens
    assert len(items) == N
    for it in items:
        doc, s = corpus[it["doc"]], it["start"]
        assert decode(doc[s : s + k]) == it["context"]
        true = decode(doc[s + k : s + k + m])
        assert it["choices"][it["label"]] == true
        assert it["choices"].count(true) == 1 and len(set(it["choices"])) == SETTINGS.choices
        assert it["sources"][it["label"]] == [it["doc"], s + k]
        for j, (d, t) in enumerate(it["sources"]):
            assert decode(corpus[d][t : t + m]) == it["choices"][j] and t + m <= len(corpus[d])
            if j != it["label"] and d == it["doc"]:  # far from the item's context and continuation
                assert t + m <= s - (k + m) or t >= s + k + m + (k + m)
    labels = np.bincount([it["label"] for it in items], minlength=SETTINGS.choices)
    assert np.all(np.abs(labels - N * CHANCE) <= 4 * math.sqrt(N * CHANCE * (1 - CHANCE))), labels
    assert len({(it["doc"], it["start"]) for it in items}) == N  # no context window drawn twice


def test_an_oracle_scores_100_percent_and_a_unigram_scorer_is_near_chance(task_manager, scorers):
    import lm_eval

    oracle, unigram = scorers
    got = {}
    for name, lm in (("oracle", oracle), ("unigram", unigram)):
        res = lm_eval.simple_evaluate(model=lm, tasks=[TASK_NAME], task_manager=task_manager, num_fewshot=0,
                                      bootstrap_iters=0, log_samples=False)
        assert res["n-samples"][TASK_NAME]["effective"] == N
        got[name] = res["results"][TASK_NAME]
    assert got["oracle"]["acc,none"] == 1.0 and got["oracle"]["acc_norm,none"] == 1.0
    assert abs(got["unigram"]["acc,none"] - CHANCE) <= TOLERANCE, got["unigram"]
    assert abs(got["unigram"]["acc_norm,none"] - CHANCE) <= TOLERANCE, got["unigram"]


def test_the_same_seed_gives_identical_files_and_another_seed_other_items(corpus, items, task_dir, tmp_path):
    first = {n: (task_dir / n).read_bytes() for n in (DATA_FILE, YAML_FILE)}
    write_task(task_dir, build_items(corpus, decode, SETTINGS), SETTINGS)  # rewritten in place
    assert {n: (task_dir / n).read_bytes() for n in first} == first
    write_task(tmp_path, build_items(corpus, decode, SETTINGS), SETTINGS)  # elsewhere: only the path differs
    assert (tmp_path / DATA_FILE).read_bytes() == first[DATA_FILE]
    assert (tmp_path / YAML_FILE).read_text().replace(str(tmp_path), str(task_dir)) == first[YAML_FILE].decode()
    other = build_items(corpus, decode, ContinuationSettings(**{**SETTINGS.as_dict(), "seed": 1}))
    assert [(it["doc"], it["start"]) for it in other] != [(it["doc"], it["start"]) for it in items]
    assert [it["label"] for it in other] != [it["label"] for it in items]


def test_a_word_initial_space_stays_on_the_continuation_with_a_sentencepiece_like_decoder():
    """Decoding the continuation's ids alone would drop the leading space of its first word
    (sentencepiece strips it at the start of a text); each choice is cut from its own window instead."""
    rng = np.random.default_rng(2)
    vocab = ["\u2581" + "".join(rng.choice(list("abcdefgh"), rng.integers(1, 5))) for _ in range(300)]

    def sp_decode(ids):
        return "".join(vocab[i] for i in ids).replace("\u2581", " ").lstrip(" ")

    docs = [rng.integers(0, len(vocab), int(rng.integers(60, 200))) for _ in range(20)]
    st = ContinuationSettings(n_items=50, context_tokens=8, continuation_tokens=4, seed=3)
    for it in build_items(docs, sp_decode, st):
        s, k, m = it["start"], st.context_tokens, st.continuation_tokens
        assert it["context"] + it["choices"][it["label"]] == sp_decode(docs[it["doc"]][s : s + k + m])
        assert all(c.startswith(" ") for c in it["choices"])  # true and distractors look alike


def test_its_name_is_ours_no_task_shipped_with_lm_eval_uses_it():
    """The workflow's TaskManager(include_path=...) also indexes lm-eval's own tasks (slow to build
    here); a task there of the same name would be overridden, so none may use it."""
    import lm_eval

    root = os.path.join(os.path.dirname(lm_eval.__file__), "tasks")
    clashes = [os.path.join(d, f) for d, _, files in os.walk(root) for f in files
               if f.endswith(".yaml") and TASK_NAME in open(os.path.join(d, f), encoding="utf-8", errors="replace").read()]
    assert clashes == []
    assert TASK_NAME not in {"hellaswag", "mmlu", "arc_easy", "arc_challenge"}


def test_bad_settings_and_too_small_corpora_are_one_line_errors(corpus):
    with pytest.raises(ContinuationTaskError, match="choices: must be at least 2"):
        ContinuationSettings(choices=1)
    with pytest.raises(ContinuationTaskError, match="no held-out document has 1100 tokens"):
        build_items(corpus, decode, ContinuationSettings(context_tokens=1000, continuation_tokens=100))
    with pytest.raises(ContinuationTaskError, match="distinct distractors"):
        build_items([np.arange(100) % 128], decode, ContinuationSettings(n_items=1, context_tokens=30,
                                                                         continuation_tokens=20))
    with pytest.raises(ContinuationTaskError, match="unknown settings"):
        ContinuationSettings.of({"n_item": 3})
