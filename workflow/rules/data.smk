# Tokenizer (trained on the source's training documents, or a given one) -> one-pass preparation:
# stream, tokenise once, length filter, split by document hash, token shards.


rule tokenizer:
    input:
        source_files,
    output:
        TOKENIZER,
    params:
        cfg=C.dumps(DATA_KEYS),
    threads: all_cores()
    resources:
        runtime=240,
        mem_mb=16000,
    log:
        f"{LOGS}/tokenizer.log",
    benchmark:
        f"{BENCH}/tokenizer.tsv"
    conda:
        ENV
    shell:
        "\"$EXPE_PYTHON\" -m expe.cli tokenizer --config-json {params.cfg:q} --out {output:q} --threads {threads} > {log:q} 2>&1"


rule shards:
    input:
        source_files,
        tokenizer=TOKENIZER,
    output:
        expand(f"{SHARDS}/{{split}}.{{ext}}", split=["train", "dev", "test"], ext=["bin", "idx.npy", "json"]),
        manifest=f"{SHARDS}/manifest.json",
    params:
        cfg=C.dumps(DATA_KEYS),
        work=f"{DATA}/prepare_work",  # chunk parts of a killed run; never an output, so a rerun resumes
    threads: config["data"]["workers"]
    resources:
        runtime=2880,
        mem_mb=lambda w, threads: 4000 + 3000 * threads,
    log:
        f"{LOGS}/shards.log",
    benchmark:
        f"{BENCH}/shards.tsv"
    conda:
        ENV
    shell:
        "\"$EXPE_PYTHON\" -m expe.cli prepare --config-json {params.cfg:q} --tokenizer {input.tokenizer:q} --out $(dirname {output.manifest:q}) "
        "--work {params.work:q} --no-progress >> {log:q} 2>&1"


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
        "\"$EXPE_PYTHON\" -m expe.cli dump-config --json {params.cfg:q} --out {output:q} > {log:q} 2>&1"


rule results_index:
    """Where every result of this config lives (what tables and plots read, so a cell traces to a file)."""
    output:
        INDEX_FILE,
    params:
        index=json.dumps(results_index()),
    log:
        f"{LOGS}/index.log",
    conda:
        ENV
    shell:
        "\"$EXPE_PYTHON\" -m expe.cli dump-spec --json {params.index:q} --out {output:q} > {log:q} 2>&1"


# `snakemake --cores 16 data` on a machine with internet (a login node) before GPU jobs on nodes without.
rule data:
    input:
        rules.shards.output.manifest,
