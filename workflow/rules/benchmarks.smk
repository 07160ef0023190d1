# lm-evaluation-harness tasks (HellaSwag, MMLU, ARC-Challenge, ARC-Easy). `benchmark_data` fetches the
# datasets into the Hugging Face cache where the internet is (a local rule on clusters); the scoring
# jobs then read the cache offline. Without the datasets (the offline default), the result records
# "not run: dataset unavailable offline" and the workflow goes on.


rule benchmark_data:
    input:
        spec=PLAN.bench_data_spec,
    output:
        PLAN.bench_data,
    resources:
        runtime=120,
    log:
        f"{LOGS}/benchmarks/data.log",
    conda:
        ENV
    shell:
        "\"$EXPE_PYTHON\" -m expe.cli benchmark-data --spec-file {input.spec:q} --out {output:q} > {log:q} 2>&1"


rule benchmark:
    input:
        weights=lambda w: f"{model_dir(w)}/model.safetensors",
        spec=f"{RES}/specs/benchmark/{{bhash}}.json",
        tokenizer=PLAN.tokenizer,
        data=PLAN.bench_data,
    output:
        f"{RES}/models/{{model}}/{{hash}}/benchmarks/{{bhash}}.json",
    threads: 1
    resources:
        gpu=GPU,
        runtime=120,
    log:
        f"{LOGS}/benchmarks/{{model}}.{{hash}}.{{bhash}}.log",
    benchmark:
        f"{BENCH}/benchmarks/{{model}}.{{hash}}.{{bhash}}.tsv"
    conda:
        ENV
    shell:
        "HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 \"$EXPE_PYTHON\" -m expe.cli benchmark --model-dir $(dirname {input.weights:q}) "
        "--tokenizer {input.tokenizer:q} --spec-file {input.spec:q} --availability {input.data:q} --out {output:q} "
        "--threads {threads} --device \"$EXPE_DEVICE\" > {log:q} 2>&1"
