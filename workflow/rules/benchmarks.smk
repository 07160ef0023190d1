# lm-evaluation-harness tasks: the paper's (HellaSwag, MMLU, ARC-Challenge, ARC-Easy) and our own
# heldout_continuation ("held-out continuation choice", not one of the paper's), built from the held-out
# test shard so that the stage always runs offline. `benchmark_data` fetches the paper's datasets into
# the Hugging Face cache where the internet is (a local rule on clusters); the scoring jobs then read
# the cache offline. Without those datasets (the offline default), their results record
# "not run: dataset unavailable offline" and the workflow goes on.


rule heldout_task:
    input:
        spec=f"{RES}/specs/heldout_task/{{thash}}.json",
        test=f"{PLAN.shards}/test.json",
        test_tokens=expand(f"{PLAN.shards}/test.{{ext}}", ext=["bin", "idx.npy"]),
        tokenizer=PLAN.tokenizer,
    output:
        task=f"{PLAN.data}/tasks/{{thash}}/heldout_continuation.yaml",
        jsonl=f"{PLAN.data}/tasks/{{thash}}/heldout_continuation.jsonl",
    resources:
        runtime=30,
    log:
        f"{LOGS}/benchmarks/heldout_task.{{thash}}.log",
    benchmark:
        f"{BENCH}/benchmarks/heldout_task.{{thash}}.tsv"
    conda:
        ENV
    shell:
        "\"$EXPE_PYTHON\" -m expe.cli heldout-task --spec-file {input.spec:q} --data $(dirname {input.test:q}) "
        "--tokenizer {input.tokenizer:q} --out $(dirname {output.task:q}) > {log:q} 2>&1"


localrules:
    heldout_task,  # seconds of work: not worth a wait in a cluster queue


rule benchmark_data:
    input:
        spec=PLAN.bench_data_spec,
        task=[PLAN.heldout_task] if PLAN.heldout_task else [],  # when benchmarks.tasks lists it
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
        task=[PLAN.heldout_task] if PLAN.heldout_task else [],  # when benchmarks.tasks lists it
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
