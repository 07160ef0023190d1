"""`expe tokenizer`, `expe prepare`: the data steps."""

from __future__ import annotations

from expe.cli.args import common, config, progress


def cmd_tokenizer(args):
    from expe.data.tokenizer import build_tokenizer

    info = build_tokenizer(config(args), args.out, threads=args.threads)
    print(f"tokenizer: {info['path']} ({info['type']}, vocab {info['vocab_size']})")


def cmd_prepare(args):
    from expe.data.prepare import prepare

    s = prepare(config(args), args.tokenizer, args.out, work_dir=args.work, progress=progress(args))
    c = s["corpus"]
    print(f"data: {c['documents_kept']} of {c['documents_seen']} documents kept, {c['tokens_kept']:,} tokens "
          f"({c['documents_too_short']} shorter than data.min_tokens)")
    for split, v in s["splits"].items():
        print(f"{split}: {v['n_docs']} docs, {v['n_tokens']:,} tokens")


def add_commands(sub) -> None:
    h = ("train a sentencepiece BPE tokenizer on the source's training documents, or copy a given one "
         "(tokenizer.type: load)")
    sp = sub.add_parser("tokenizer", help=h, description=h)
    sp.add_argument("--config", required=True, help="config YAML, or the data keys the workflow resolved (JSON)")
    sp.add_argument("--out", required=True, help="path of the tokenizer.model to write")
    common(sp)
    sp.set_defaults(fn=cmd_tokenizer)

    h = ("one pass over the source: tokenise once, keep documents >= min_tokens up to token_budget, split by "
         "document hash, write token shards (resumable)")
    sp = sub.add_parser("prepare", help=h, description=h)
    sp.add_argument("--config", required=True, help="config YAML, or the data keys the workflow resolved (JSON)")
    sp.add_argument("--tokenizer", required=True)
    sp.add_argument("--out", required=True, help="shards folder (<split>.bin/.idx.npy/.json, manifest.json)")
    sp.add_argument("--work", help="folder for resumable chunk parts (default: <out>/../prepare_work)")
    common(sp, threads=False)
    sp.set_defaults(fn=cmd_prepare)
