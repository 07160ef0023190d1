# HellaSwag, MMLU, ARC-Challenge, ARC-Easy through lm-evaluation-harness. `benchmark_data` fetches
# the datasets into the Hugging Face cache where the internet is (a local rule on clusters); the
# scoring jobs then read the cache offline. Without the datasets (the offline default), the result
# records "not run: dataset unavailable offline" and the workflow goes on.

BENCH_DATA = f"{RES}/benchmarks/data/{_hash(config['benchmarks'])}.json"


rule benchmark_data:
    output:
        BENCH_DATA,
    params:
        tasks=",".join(config["benchmarks"]["tasks"]),
        include=lambda w: f"--include-path {shlex.quote(config['benchmarks']['include_path'])}"
        if config["benchmarks"]["include_path"]
        else "",
    resources:
        runtime=120,
    log:
        f"{LOGS}/benchmarks/data.log",
    conda:
        ENV
    shell:
        "\"$EXPE_PYTHON\" -m expe.cli benchmark-data --tasks {params.tasks} {params.include} --out {output:q} > {log:q} 2>&1"


rule benchmark:
    input:
        weights=lambda w: f"{model_dir(w.model, w.seed)}/model.safetensors",
        tokenizer=TOKENIZER,
        data=BENCH_DATA,
    output:
        f"{RES}/benchmarks/{{model}}/s{{seed}}/{{variant}}.json",
    params:
        pe=pe_args,
        tasks=",".join(config["benchmarks"]["tasks"]),
        fewshot=config["benchmarks"]["num_fewshot"],
        limit=lambda w: f"--limit {config['benchmarks']['limit']}" if config["benchmarks"]["limit"] else "",
        include=lambda w: f"--include-path {shlex.quote(config['benchmarks']['include_path'])}"
        if config["benchmarks"]["include_path"]
        else "",
        batch=config["benchmarks"]["batch_size"],
    threads: 1
    resources:
        gpu=0 if DEVICE == "cpu" else 1,
        runtime=120,
    log:
        f"{LOGS}/benchmarks/{{model}}/s{{seed}}/{{variant}}.log",
    benchmark:
        f"{BENCH}/benchmarks/{{model}}/s{{seed}}/{{variant}}.tsv"
    conda:
        ENV
    shell:
        "HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 \"$EXPE_PYTHON\" -m expe.cli benchmark --model-dir $(dirname {input.weights:q}) "
        "--tokenizer {input.tokenizer:q} --tasks {params.tasks} --availability {input.data:q} "
        "--out {output:q} --num-fewshot {params.fewshot} {params.limit} {params.include} --batch-size {params.batch} "
        "{params.pe} --threads {threads} --device \"$EXPE_DEVICE\" > {log:q} 2>&1"
