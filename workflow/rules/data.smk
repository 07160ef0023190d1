# Corpus (download + length filter + split) -> tokenizer -> token shards.


rule corpus:
    output:
        train=f"{RES}/data/corpus/train.jsonl",
        dev=f"{RES}/data/corpus/dev.jsonl",
        test=f"{RES}/data/corpus/test.jsonl",
        manifest=f"{RES}/data/corpus/manifest.json",
    input:
        cfg=ancient(f"{RES}/config.json"),
    params:
        uses=data_slice,
    log:
        f"{LOGS}/corpus.log",
    benchmark:
        f"{BENCH}/corpus.tsv"
    conda:
        ENV
    shell:
        "expe corpus --config {input.cfg} --out $(dirname {output.manifest}) --no-progress > {log} 2>&1"


rule tokenizer:
    input:
        cfg=ancient(f"{RES}/config.json"),
        train=rules.corpus.output.train,
    output:
        TOKENIZER,
    params:
        uses=data_slice,
    threads: workflow.cores
    log:
        f"{LOGS}/tokenizer.log",
    benchmark:
        f"{BENCH}/tokenizer.tsv"
    conda:
        ENV
    shell:
        "expe tokenizer --config {input.cfg} --corpus $(dirname {input.train}) --out {output} "
        "--threads {threads} > {log} 2>&1"


rule shards:
    input:
        cfg=ancient(f"{RES}/config.json"),
        tokenizer=TOKENIZER,
        corpus=rules.corpus.output.manifest,
    output:
        expand(f"{SHARDS}/{{split}}.{{ext}}", split=["train", "dev", "test"], ext=["bin", "idx.npy", "json"]),
        manifest=f"{SHARDS}/manifest.json",
    params:
        uses=data_slice,
    threads: workflow.cores
    log:
        f"{LOGS}/shards.log",
    benchmark:
        f"{BENCH}/shards.tsv"
    conda:
        ENV
    shell:
        "expe shards --config {input.cfg} --corpus $(dirname {input.corpus}) --tokenizer {input.tokenizer} "
        "--out $(dirname {output.manifest}) --threads {threads} --no-progress > {log} 2>&1"


rule resolved_config:
    """The validated config with defaults filled: input of every step and of the provenance."""
    output:
        f"{RES}/config.json",
    params:
        cfg=json.dumps(config),  # key order kept: it is the order of table rows
    log:
        f"{LOGS}/config.log",
    conda:
        ENV
    shell:
        "expe dump-config --json {params.cfg:q} --out {output} > {log} 2>&1"
