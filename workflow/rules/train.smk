# One training job per model entry. Checkpoints live outside `output:` (Snakemake deletes outputs
# before rerunning a job), so a rerun after a kill or preemption resumes from the latest one.


rule train:
    input:
        shards=f"{SHARDS}/train.json",
    output:
        weights=f"{RES}/models/{{model}}/model.safetensors",
        config=f"{RES}/models/{{model}}/config.json",
        metrics=f"{RES}/models/{{model}}/metrics.jsonl",
    params:
        device=DEVICE,
        spec=spec,
        checkpoints=lambda w: f"{RES}/checkpoints/{w.model}/{spec_id(w)}",
    threads: 1
    resources:
        runtime=60,
    log:
        f"{LOGS}/train/{{model}}.log",
    benchmark:
        f"{BENCH}/train/{{model}}.tsv"
    conda:
        ENV
    shell:
        "expe train --spec {params.spec:q} --data $(dirname {input.shards}) --out $(dirname {output.weights}) "
        "--checkpoints {params.checkpoints} --threads {threads} --device {params.device} --no-progress >> {log} 2>&1"


# `snakemake --cores 2 model_<name>` trains and evaluates one entry (e.g. one ablation) only.
for _m in MODELS:

    rule:
        name:
            f"model_{_m}"
        input:
            eval_results([_m]),
