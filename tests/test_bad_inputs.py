"""Bad configs and bad data: one line naming the problem, a non-zero exit, existing results untouched.

Each case runs the `expe` command line in-process against a small, fully prepared project."""

import json
import shutil

import pytest
import yaml

from conftest import make_config, synthetic_docs, tiny_spec
from expe.cli import main
from expe.data.prepare import prepare
from expe.data.tokenizer import build_tokenizer
from expe.training.loop import train


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    docs = synthetic_docs(30)
    cfg = make_config(root, docs)
    (root / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    build_tokenizer(cfg, root / "tok.model")
    prepare(cfg, root / "tok.model", root / "shards", work_dir=root / "work", progress=False)
    spec = tiny_spec(steps=8)
    train(spec, root / "shards", root / "model", root / "ckpt", progress=False)
    train(spec, root / "shards", root / "partial", root / "ckpt_partial", stop_after=4, progress=False)
    (root / "spec.json").write_text(json.dumps(spec))
    return root


def variant(project, tmp, **edits):
    """A copy of the project's config with `edits` ('a.b': value) applied; returns its path."""
    cfg = yaml.safe_load((project / "config.yaml").read_text())
    for dotted, value in edits.items():
        *parents, key = dotted.split(".")
        node = cfg
        for p in parents:
            node = node.setdefault(p, {})
        if value is DELETE:
            node.pop(key)
        else:
            node[key] = value
    path = tmp / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return str(path)


DELETE = object()


def copy_damaged(project, tmp, what):
    if what == "shard":
        d = tmp / "shards"
        shutil.copytree(project / "shards", d)
        (d / "test.bin").write_bytes((d / "test.bin").read_bytes()[:-6])
        return str(d)
    if what == "flipped_shard":  # same length, one byte changed: only the checksum can tell
        d = tmp / "shards"
        shutil.copytree(project / "shards", d)
        data = bytearray((d / "train.bin").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (d / "train.bin").write_bytes(bytes(data))
        return str(d)
    if what == "weights":
        d = tmp / "model"
        shutil.copytree(project / "model", d)
        (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:-100])
        return str(d)
    if what == "checkpoint":
        d = tmp / "ckpt"
        shutil.copytree(project / "ckpt_partial", d)
        (ck,) = d.glob("step-*.pt")
        ck.write_bytes(ck.read_bytes()[:2000])
        return str(d)
    if what == "other_vocab_shards":
        from conftest import write_shards

        return str(write_shards(tmp / "other", {"test": [list(range(300))]}, vocab=1000))
    if what == "non_utf8_dir":
        d = tmp / "texts"
        d.mkdir()
        (d / "a.txt").write_bytes(b"\xff\xfe\xfa not utf-8")
        return str(d)
    if what == "config_json":
        d = tmp / "model"
        shutil.copytree(project / "model", d)
        (d / "config.json").write_text((d / "config.json").read_text()[:50])
        return str(d)
    if what == "empty_jsonl":
        (tmp / "empty.jsonl").write_text("")
        return str(tmp / "empty.jsonl")
    if what == "a_file":
        (tmp / "plain_file").write_text("x")
        return str(tmp / "plain_file")
    raise ValueError(what)


# (case id, argv builder, expected fragment of the one-line message)
CASES = [
    ("misspelt key", lambda p, t: ["validate", variant(p, t, **{"data.min_token": 5})],
     "data.min_token: unknown key (did you mean 'min_tokens'?)"),
    ("misspelt lm-eval task", lambda p, t: ["validate", variant(p, t, **{"benchmarks.tasks": ["hellaswagg"]})],
     "benchmarks.tasks: 'hellaswagg' is not an lm-eval task (did you mean 'hellaswag'?)"),
    ("YaRN factor below 1", lambda p, t: ["validate", variant(p, t, **{"eval.variants": {
        "v": {"pe": {"yarn_factor": 0.5}, "models": ["m"]}}})], "eval.variants.v.pe.yarn_factor: must be >= 1, got 0.5"),
    ("end learning rate above the peak", lambda p, t: ["validate", variant(p, t, **{"train.end_lr": 1.0})],
     "models.m: train.end_lr 1.0 is above train.lr"),
    ("misspelt top-level key", lambda p, t: ["validate", variant(p, t, **{"modles": {}})],
     "modles: unknown key (did you mean 'models'?)"),
    ("wrong type", lambda p, t: ["validate", variant(p, t, **{"train.steps": "ten"})],
     "train.steps: must be of type integer, got 'ten'"),
    ("config naming a missing corpus folder", lambda p, t: ["validate", variant(
        p, t, **{"data.source": "text_dir", "data.path": str(t / "nowhere")})],
     "nowhere: not a folder (data.source text_dir reads its .txt/.md files)"),
    ("config naming a folder as jsonl file", lambda p, t: ["validate", variant(
        p, t, **{"data.source": "jsonl", "data.path": str(t)})], ": a folder (data.source jsonl reads one file)"),
    ("config with seeds not a list", lambda p, t: ["validate", variant(p, t, seeds=3)],
     "seeds: must be of type array, got 3 (seeds may also be null)"),
    ("unknown encoding", lambda p, t: ["validate", variant(p, t, **{"models.m.pe": {"name": "foo"}})],
     "models.m.pe.name: 'foo' is not allowed (allowed: nope, sinusoidal, rope, alibi, expe, exqpe"),
    ("l > d", lambda p, t: ["validate", variant(p, t, **{"models.m.pe": {"name": "expe", "l": 1000}})],
     "models.m.pe.l: must satisfy 0 < l <= d_model (64), got 1000"),
    ("zero length", lambda p, t: ["validate", variant(p, t, **{"train.seq_len": 0})],
     "train.seq_len: must be >= 1, got 0"),
    ("negative length", lambda p, t: ["validate", variant(p, t, **{"data.min_tokens": -3})],
     "data.min_tokens: must be >= 0, got -3"),
    ("missing required key", lambda p, t: ["validate", variant(p, t, **{"models.m.architecture": DELETE})],
     "models.m: missing required key 'architecture'"),
    ("unknown architecture", lambda p, t: ["validate", variant(p, t, **{"models.m.architecture": "huge"})],
     "models.m.architecture: unknown architecture 'huge'"),
    ("ev multiple no test document holds", lambda p, t: ["validate", variant(p, t, **{"eval.multiples": [1, 64]})],
     "eval.multiples: ev=64 needs windows of 513 tokens"),
    ("option of another encoding", lambda p, t: ["validate", variant(p, t, **{"models.m.pe": {"name": "rope", "S": 2}})],
     "models.m.pe.S: not a parameter of rope"),
    ("table row of no model", lambda p, t: ["validate", variant(p, t, **{"tables.section41": {"ExPE": "nope"}})],
     "tables.section41.ExPE: no model entry 'nope'"),
    ("missing config file", lambda p, t: ["validate", str(t / "nope.yaml")], "config file"),
    ("invalid YAML", lambda p, t: ["validate", str(_write(t / "x.yaml", "a: [1, 2"))], "is not valid YAML"),
    ("empty corpus", lambda p, t: prep(p, t, variant(p, t, **{"data.path": copy_damaged(p, t, "empty_jsonl")})),
     "the corpus is empty"),
    ("only non-UTF-8 text", lambda p, t: prep(p, t, variant(p, t, **{
        "data.source": "text_dir", "data.path": copy_damaged(p, t, "non_utf8_dir")})),
     "no usable document; all 1 were skipped (1 non_utf8)"),
    ("every document too short", lambda p, t: prep(p, t, variant(p, t, **{"data.min_tokens": 10**6,
                                                                          "data.test_min_tokens": 10**6})),
     "every one of the 30 documents is shorter"),
    ("missing tokenizer file", lambda p, t: ["tokenizer", "--config", variant(p, t, **{
        "tokenizer.type": "load", "tokenizer.path": str(t / "missing.model")}), "--out", str(t / "out" / "t.model")],
     "tokenizer file"),
    ("unwritable output folder", lambda p, t: ["prepare", "--config", str(p / "config.yaml"), "--tokenizer",
                                               str(p / "tok.model"), "--out", copy_damaged(p, t, "a_file") + "/sub"],
     "cannot create output folder"),
    ("corrupt shard", lambda p, t: ["evaluate", "--model-dir", str(p / "model"), "--data", copy_damaged(p, t, "shard"),
                                    "--out", str(t / "out" / "e.json"), "--multiples", "1"], "is corrupt or truncated"),
    ("shard with a flipped byte", lambda p, t: ["train", "--spec", (p / "spec.json").read_text(), "--data",
                                                copy_damaged(p, t, "flipped_shard"), "--out", str(t / "out" / "m"),
                                                "--checkpoints", str(t / "out" / "c")],
     "shards/train.bin is corrupt or truncated (checksum mismatch)"),
    ("truncated weights", lambda p, t: ["evaluate", "--model-dir", copy_damaged(p, t, "weights"), "--data",
                                        str(p / "shards"), "--out", str(t / "out" / "e.json")], "corrupt or truncated"),
    ("tokenizer/model vocabulary mismatch", lambda p, t: ["evaluate", "--model-dir", str(p / "model"), "--data",
                                                          copy_damaged(p, t, "other_vocab_shards"),
                                                          "--out", str(t / "out" / "e.json"), "--multiples", "1"],
     "vocabulary mismatch"),
    ("evaluation longer than every test document", lambda p, t: [
        "evaluate", "--model-dir", str(p / "model"), "--data", str(p / "shards"), "--out", str(t / "out" / "e.json"),
        "--multiples", "1000"], "no test document holds a window of 16001 tokens"),
    ("inference option of another encoding", lambda p, t: [
        "evaluate", "--model-dir", str(p / "model"), "--data", str(p / "shards"), "--out", str(t / "out" / "e.json"),
        "--pe", "interpolation=2"], "pe.interpolation: not an inference-time option of expe"),
    ("malformed --pe", lambda p, t: ["evaluate", "--model-dir", str(p / "model"), "--data", str(p / "shards"),
                                     "--out", str(t / "out" / "e.json"), "--pe", "scale"], "--pe: expected KEY=VALUE"),
    ("truncated checkpoint", lambda p, t: ["train", "--spec", (p / "spec.json").read_text(), "--data", str(p / "shards"),
                                           "--out", str(t / "out"), "--checkpoints", copy_damaged(p, t, "checkpoint")],
     "is corrupt or truncated"),
    ("checkpoint of another config", lambda p, t: [
        "train", "--spec", json.dumps({**json.loads((p / "spec.json").read_text()), "seed": 99}), "--data",
        str(p / "shards"), "--out", str(t / "out"), "--checkpoints", str(_copy(p / "ckpt_partial", t / "ck"))],
     "was written for a different config"),
    ("unknown model entry", lambda p, t: ["train", "--config", str(p / "config.yaml"), "--model", "nope", "--data",
                                          str(p / "shards"), "--out", str(t / "out")], "models: no entry 'nope'"),
    ("bad --spec JSON", lambda p, t: ["train", "--spec", "{not json", "--data", str(p / "shards"), "--out", str(t / "out")],
     "--spec: not valid JSON"),
    # issue 14, item 4, and what a new user tries next
    ("negative batch size", lambda p, t: ev(p, t, "--batch-size", "-1"), "argument --batch-size: must be a positive integer, got -1"),
    ("zero batch size", lambda p, t: ev(p, t, "--batch-size", "0"), "argument --batch-size: must be a positive integer, got 0"),
    ("negative max tokens", lambda p, t: ev(p, t, "--max-tokens", "-5"), "argument --max-tokens: must be a positive integer"),
    ("non-numeric multiple", lambda p, t: ev(p, t, "--multiples", "1,x"),
     "argument --multiples: must be comma-separated positive integers, got 'x' in '1,x'"),
    ("zero scale", lambda p, t: ev(p, t, "--pe", "scale=0"), "pe.scale: must be > 0, got '0'"),
    ("negative scale", lambda p, t: ev(p, t, "--pe", "scale=-2"), "pe.scale: must be > 0, got '-2'"),
    ("truncated config.json", lambda p, t: ["evaluate", "--model-dir", copy_damaged(p, t, "config_json"), "--data",
                                            str(p / "shards"), "--out", str(t / "out" / "e.json")],
     "config.json is not valid JSON"),
    ("device spelt gpu", lambda p, t: ev(p, t, "--device", "gpu"),
     "device: 'gpu' is not a device (allowed: auto, cpu, cuda, cuda:N)"),
    ("cuda on a machine without it", lambda p, t: ev(p, t, "--device", "cuda"), "device: 'cuda' requested but"),
    ("unknown precision", lambda p, t: ev(p, t, "--precision", "fp8"), "argument --precision: invalid choice: 'fp8'"),
    ("several precisions, one output file", lambda p, t: ev(p, t, "--precisions", "fp32,bf16"),
     "--precisions: --out must contain {precision}"),
    ("duplicate model entry", lambda p, t: ["validate", str(_write(t / "d.yaml", (p / "config.yaml").read_text()
                                                             + "models:\n  x: {architecture: cpu-small, pe: {name: expe}}\n"))],
     "duplicate key 'models'"),
    ("YAML syntax error names the line", lambda p, t: ["validate", str(_write(t / "y.yaml", "seed: 1\nmodels: {a: [\n"))],
     "is not valid YAML: line 3"),
    ("a folder given as the config", lambda p, t: ["validate", str(t)], "is a folder, not a config file"),
    ("a list as the config", lambda p, t: ["validate", str(_write(t / "l.yaml", "- 1\n- 2\n"))], "must be a mapping"),
    ("empty seeds", lambda p, t: ["validate", variant(p, t, **{"seeds": []})], "seeds:"),
    ("repeated seed", lambda p, t: ["validate", variant(p, t, **{"seeds": [1, 1]})], "seeds:"),
    ("both seed and seeds in one entry", lambda p, t: ["validate", variant(p, t, **{"models.m.seed": 1, "models.m.seeds": [2]})],
     "models.m: give seeds or seed, not both"),
    ("gpus that do not divide the batch", lambda p, t: ["validate", variant(p, t, **{"gpus": 3})],
     "cannot be split over gpus: 3"),
    ("eval precision fp8", lambda p, t: ["validate", variant(p, t, **{"eval.precision": "fp8"})],
     "eval.precision: 'fp8' is not allowed (allowed: fp32, bf16, fp16)"),
    ("bf16 training of no model", lambda p, t: ["validate", variant(p, t, **{"beyond.bf16_training": ["nope"]})],
     "beyond.bf16_training: no model entry 'nope'"),
    ("reserved model name", lambda p, t: ["validate", variant(p, t, **{"models.x_bf16train": {
        "architecture": "cpu-small", "pe": {"name": "expe"}}})], "reserved for beyond.bf16_training"),
    ("sliding stride longer than the window", lambda p, t: ["validate", variant(p, t, **{"eval.sliding.stride": 100})],
     "eval.sliding.stride: 100 is longer than the shortest sliding window"),
    ("zero data workers", lambda p, t: ["validate", variant(p, t, **{"data.workers": 0})], "data.workers: must be >= 1"),
    ("text_dir that is a file", lambda p, t: prep(p, t, variant(p, t, **{"data.source": "text_dir",
                                                                         "data.path": copy_damaged(p, t, "a_file")})),
     "not a folder (data.source text_dir reads its .txt/.md files)"),
    ("unknown probe", lambda p, t: ["probe", "flamingo", "--model-dir", str(p / "model"), "--data", str(p / "shards"),
                                    "--out", str(t / "out" / "e.json")], "probe: 'flamingo' is not a probe"),
    ("passkey without a tokenizer", lambda p, t: ["probe", "passkey", "--model-dir", str(p / "model"), "--data",
                                                  str(p / "shards"), "--out", str(t / "out" / "e.json")],
     "probe passkey: give --tokenizer FILE"),
    ("zero threads", lambda p, t: ev(p, t, "--threads", "0"), "argument --threads: must be a positive integer"),
    ("model folder without config.json", lambda p, t: ["evaluate", "--model-dir", str(t), "--data", str(p / "shards"),
                                                       "--out", str(t / "out" / "e.json")], "needs config.json"),
    ("missing shards folder", lambda p, t: ev(p, t, "--split", "dev", data=str(t / "nowhere")), "token shard"),
    ("missing index for tables", lambda p, t: ["tables", "--config", str(p / "config.yaml"), "--index",
                                               str(t / "no.json"), "--out", str(t / "out")], "file not found"),
]


def ev(p, t, *extra, data=None):
    """`expe evaluate` of the project's model with extra arguments."""
    return ["evaluate", "--model-dir", str(p / "model"), "--data", data or str(p / "shards"),
            "--out", str(t / "out" / "e.json"), "--multiples", "1", *extra]


def prep(p, t, config):
    return ["prepare", "--config", config, "--tokenizer", str(p / "tok.model"), "--out", str(t / "out" / "shards"),
            "--work", str(t / "work")]


def _write(path, text):
    path.write_text(text)
    return path


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_line_error_and_leaves_results_untouched(case, project, tmp_path, capsys):
    _, argv, fragment = case
    out = tmp_path / "out"
    out.mkdir()
    (out / "e.json").write_text("previous result")  # an existing result that must survive
    snapshot = {p: p.read_bytes() for p in project.rglob("*") if p.is_file()}
    args = argv(project, tmp_path)
    if args[0] in ("prepare", "evaluate", "train") and "--no-progress" not in args:
        args.append("--no-progress")  # the progress bar's own lines aside, the error is one line
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("expe: error: "), err
    assert fragment in err[0]
    assert (out / "e.json").read_text() == "previous result"
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]  # nothing half-written left behind
    assert {p: p.read_bytes() for p in project.rglob("*") if p.is_file()} == snapshot


def test_every_kind_of_bad_input_is_covered():
    """Each stage's door is exercised: config keys, data, tokenizer, checkpoints and weights, the CLI."""
    ids = " ".join(c[0] for c in CASES)
    for word in ("config", "encoding", "scale", "shard", "checkpoint", "weights", "tokenizer", "json"):
        assert word in ids, f"no bad-input case about {word}"
