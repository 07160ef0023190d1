# Beyond the paper: is long context used? Repeat-retrieval and passkey probes, and the precision study
# (evaluation in fp32 / bf16 / fp16; ExPE and ExQPE also trained with bf16 autocast). One job per model
# and seed for the probes (prompts drawn from the model's training seed), one for the precisions (the
# model is loaded once).


rule probes:
    input:
        weights=lambda w: f"{model_dir(w)}/model.safetensors",
        spec=f"{RES}/specs/probes/{{phash}}.json",
        shards=f"{PLAN.shards}/{config['eval']['split']}.json",
        train=f"{PLAN.shards}/train.json",  # passkey: the key words are the training split's most frequent
        tokenizer=PLAN.tokenizer,
    output:
        retrieval=f"{RES}/models/{{model}}/{{hash}}/probes/{{phash}}/retrieval.json",
        passkey=f"{RES}/models/{{model}}/{{hash}}/probes/{{phash}}/passkey.json",
    threads: 1
    resources:
        gpu=GPU,
        runtime=120,
    log:
        f"{LOGS}/beyond/{{model}}.{{hash}}.{{phash}}.probes.log",
    benchmark:
        f"{BENCH}/beyond/{{model}}.{{hash}}.{{phash}}.probes.tsv"
    conda:
        ENV
    shell:
        "\"$EXPE_PYTHON\" -m expe.cli probe --model-dir $(dirname {input.weights:q}) --data $(dirname {input.shards:q}) "
        "--tokenizer {input.tokenizer:q} --spec-file {input.spec:q} --out $(dirname {output.retrieval:q}) "
        "--threads {threads} --device \"$EXPE_DEVICE\" > {log:q} 2>&1"


rule precision_eval:
    input:
        weights=lambda w: f"{model_dir(w)}/model.safetensors",
        spec=f"{RES}/specs/precision/{{qhash}}.json",
        shards=f"{PLAN.shards}/{config['eval']['split']}.json",
    output:
        [f"{RES}/models/{{model}}/{{hash}}/precision/{{qhash}}/{p}.json" for p in config["beyond"]["precision"]["precisions"]],
    params:
        out=lambda w, output: os.path.join(os.path.dirname(output[0]), "{precision}.json"),
    threads: 1
    resources:
        gpu=GPU,
        runtime=120,
    log:
        f"{LOGS}/beyond/{{model}}.{{hash}}.{{qhash}}.precision.log",
    benchmark:
        f"{BENCH}/beyond/{{model}}.{{hash}}.{{qhash}}.precision.tsv"
    conda:
        ENV
    shell:
        "\"$EXPE_PYTHON\" -m expe.cli evaluate --model-dir $(dirname {input.weights:q}) --data $(dirname {input.shards:q}) "
        "--spec-file {input.spec:q} --out {params.out:q} --threads {threads} --device \"$EXPE_DEVICE\" --no-progress "
        "> {log:q} 2>&1"


rule beyond_tables:
    input:
        cfg=PLAN.config_file,
        index=PLAN.index_file,
        results=PLAN.beyond_results(),
    output:
        [report(f, category="Beyond the paper", labels={"file": os.path.basename(f)})
         if f.endswith((".png", ".csv")) and "/data/" not in f else f for f in PLAN.beyond_files()],
        done=f"{RES}/beyond.done",
    params:
        out=lambda w, output: os.path.dirname(output[0]),
    log:
        f"{LOGS}/beyond_tables.log",
    conda:
        ENV
    shell:
        "\"$EXPE_PYTHON\" -m expe.cli beyond-tables --config {input.cfg:q} --index {input.index:q} --out {params.out:q} > {log:q} 2>&1 "
        "&& touch {output.done:q}"
