# HellaSwag, MMLU, ARC-Challenge, ARC-Easy through lm-evaluation-harness. Without the datasets
# (offline), the result records "not run: dataset unavailable offline" and the workflow goes on.


rule benchmark:
    input:
        weights=lambda w: f"{model_dir(w)}/model.safetensors",
        tokenizer=TOKENIZER,
    output:
        f"{RES}/benchmarks/{{model}}/{{variant}}.json",
    params:
        device=DEVICE,
        pe=pe_args,
        tasks=",".join(config["benchmarks"]["tasks"]),
        fewshot=config["benchmarks"]["num_fewshot"],
        limit=lambda w: f"--limit {config['benchmarks']['limit']}" if config["benchmarks"]["limit"] else "",
        include=lambda w: f"--include-path {config['benchmarks']['include_path']}"
        if config["benchmarks"]["include_path"]
        else "",
        batch=config["benchmarks"]["batch_size"],
    threads: 1
    resources:
        runtime=120,
    log:
        f"{LOGS}/benchmarks/{{model}}/{{variant}}.log",
    benchmark:
        f"{BENCH}/benchmarks/{{model}}/{{variant}}.tsv"
    conda:
        ENV
    shell:
        "expe benchmark --model-dir $(dirname {input.weights}) --tokenizer {input.tokenizer} --tasks {params.tasks} "
        "--out {output} --num-fewshot {params.fewshot} {params.limit} {params.include} --batch-size {params.batch} "
        "{params.pe} --threads {threads} --device {params.device} > {log} 2>&1"
