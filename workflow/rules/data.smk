# Tokenizer (trained on the source's training documents, or a given one) -> one-pass preparation:
# stream, tokenise once, length filter, split by document hash, token shards. Then the files every
# job reads: the resolved config, each job's settings, and the index of every result.


rule tokenizer:
    input:
        source_files,
        cfg=f"{PLAN.data}/data.json",
    output:
        PLAN.tokenizer,
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
        "\"$EXPE_PYTHON\" -m expe.cli tokenizer --config {input.cfg:q} --out {output:q} --threads {threads} > {log:q} 2>&1"


rule shards:
    input:
        source_files,
        cfg=f"{PLAN.data}/data.json",
        tokenizer=PLAN.tokenizer,
    output:
        expand(f"{PLAN.shards}/{{split}}.{{ext}}", split=["train", "dev", "test"], ext=["bin", "idx.npy", "json"]),
        manifest=f"{PLAN.shards}/manifest.json",
    params:
        work=f"{PLAN.data}/prepare_work",  # chunk parts of a killed run; never an output, so a rerun resumes
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
        "\"$EXPE_PYTHON\" -m expe.cli prepare --config {input.cfg:q} --tokenizer {input.tokenizer:q} "
        "--out $(dirname {output.manifest:q}) --work {params.work:q} --no-progress >> {log:q} 2>&1"


# Files written from the validated config, in this process (no job script): their paths are hashes
# of their content, so an unchanged setting is never rewritten and never reruns what reads it.
rule job_spec:
    output:
        f"{RES}/specs/{{kind}}/{{hash}}.json",
    log:
        f"{LOGS}/specs/{{kind}}.{{hash}}.log",
    run:
        write_json(output[0], PLAN.specs[output[0]])


rule data_spec:
    output:
        f"{PLAN.data}/data.json",
    log:
        f"{LOGS}/specs/data.log",
    run:
        write_json(output[0], PLAN.specs[output[0]])


rule resolved_config:
    """The validated config with defaults filled: what the tables and their provenance read."""
    output:
        PLAN.config_file,
    log:
        f"{LOGS}/config.log",
    run:
        write_json(output[0], C.resolved_document(config))


rule results_index:
    """Where every result of this config lives (what tables and plots read, so a cell traces to a file)."""
    output:
        PLAN.index_file,
    log:
        f"{LOGS}/index.log",
    run:
        write_json(output[0], PLAN.index())


localrules:
    job_spec,
    data_spec,
    resolved_config,
    results_index,


# `snakemake --cores 16 data` on a machine with internet (a login node) before GPU jobs on nodes without.
rule data:
    input:
        rules.shards.output.manifest,
