# Corpus (download + length filter + split) -> tokenizer -> token shards.


rule corpus:
    output:
        train=f"{DATA}/corpus/train.jsonl",
        dev=f"{DATA}/corpus/dev.jsonl",
        test=f"{DATA}/corpus/test.jsonl",
        manifest=f"{DATA}/corpus/manifest.json",
    params:
        cfg=C.dumps(DATA_KEYS),
    log:
        f"{LOGS}/corpus.log",
    benchmark:
        f"{BENCH}/corpus.tsv"
    conda:
        ENV
    shell:
        "expe corpus --config-json {params.cfg:q} --out $(dirname {output.manifest}) --no-progress > {log} 2>&1"


rule tokenizer:
    input:
        train=rules.corpus.output.train,
    output:
        TOKENIZER,
    params:
        cfg=C.dumps(DATA_KEYS),
    threads: workflow.cores
    log:
        f"{LOGS}/tokenizer.log",
    benchmark:
        f"{BENCH}/tokenizer.tsv"
    conda:
        ENV
    shell:
        "expe tokenizer --config-json {params.cfg:q} --corpus $(dirname {input.train}) --out {output} "
        "--threads {threads} > {log} 2>&1"


rule shards:
    input:
        tokenizer=TOKENIZER,
        corpus=rules.corpus.output.manifest,
    output:
        expand(f"{SHARDS}/{{split}}.{{ext}}", split=["train", "dev", "test"], ext=["bin", "idx.npy", "json"]),
        manifest=f"{SHARDS}/manifest.json",
    params:
        cfg=C.dumps(DATA_KEYS),
    threads: workflow.cores
    log:
        f"{LOGS}/shards.log",
    benchmark:
        f"{BENCH}/shards.tsv"
    conda:
        ENV
    shell:
        "expe shards --config-json {params.cfg:q} --corpus $(dirname {input.corpus}) --tokenizer {input.tokenizer} "
        "--out $(dirname {output.manifest}) --threads {threads} --no-progress > {log} 2>&1"


rule resolved_config:
    """The validated config with defaults filled: what the tables and their provenance read."""
    output:
        CONFIG_FILE,
    params:
        cfg=json.dumps(config),  # key order kept: it is the order of table rows
    log:
        f"{LOGS}/config.log",
    benchmark:
        f"{BENCH}/config.tsv"
    conda:
        ENV
    shell:
        "expe dump-config --json {params.cfg:q} --out {output} > {log} 2>&1"
