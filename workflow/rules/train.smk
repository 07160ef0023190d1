# One training job per model entry. Checkpoints live outside `output:` (Snakemake deletes outputs
# before rerunning a job), so a rerun after a kill or preemption resumes from the latest one.


rule model_spec:
    output:
        f"{RES}/models/{{model}}/{{specid}}/spec.json",
    params:
        spec=spec,
    log:
        f"{LOGS}/specs/{{model}}.{{specid}}.log",
    benchmark:
        f"{BENCH}/specs/{{model}}.{{specid}}.tsv"
    conda:
        ENV
    shell:
        "expe dump-spec --json {params.spec:q} --out {output} > {log} 2>&1"


rule train:
    input:
        spec=rules.model_spec.output,
        shards=f"{SHARDS}/train.json",
    output:
        weights=f"{RES}/models/{{model}}/{{specid}}/model.safetensors",
        config=f"{RES}/models/{{model}}/{{specid}}/config.json",
        metrics=f"{RES}/models/{{model}}/{{specid}}/metrics.jsonl",
    params:
        device=DEVICE,
        checkpoints=lambda w: f"{RES}/checkpoints/{w.model}/{w.specid}",
    threads: 1
    resources:
        runtime=60,
    log:
        f"{LOGS}/train/{{model}}.{{specid}}.log",
    benchmark:
        f"{BENCH}/train/{{model}}.{{specid}}.tsv"
    conda:
        ENV
    shell:
        "expe train --spec-file {input.spec} --data $(dirname {input.shards}) --out $(dirname {output.weights}) "
        "--checkpoints {params.checkpoints} --threads {threads} --device {params.device} --no-progress >> {log} 2>&1"


# `snakemake --cores 2 model_<name>` trains and evaluates one entry (e.g. one ablation) only.
for _m in MODELS:

    rule:
        name:
            f"model_{_m}"
        input:
            eval_results([_m]),
