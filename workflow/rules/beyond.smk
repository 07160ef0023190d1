# Beyond the paper: is long context used? Repeat-retrieval and passkey probes, and the precision
# study (evaluation in fp32 / bf16 / fp16; ExPE and ExQPE also trained with bf16 autocast). One job
# per model and seed for the probes, one for the precisions (the model is loaded once).


rule probes:
    input:
        weights=lambda w: f"{model_dir(w.model, w.seed)}/model.safetensors",
        shards=f"{SHARDS}/{config['eval']['split']}.json",
        tokenizer=TOKENIZER,
    output:
        retrieval=f"{RES}/beyond/{{model}}/s{{seed}}/retrieval.json",
        passkey=f"{RES}/beyond/{{model}}/s{{seed}}/passkey.json",
    params:
        r=config["beyond"]["retrieval"],
        p=config["beyond"]["passkey"],
        distances=",".join(map(str, config["beyond"]["retrieval"]["distances"])),
        multiples=",".join(map(str, config["beyond"]["passkey"]["multiples"])),
        split=config["eval"]["split"],
    threads: 1
    resources:
        gpu=0 if DEVICE == "cpu" else 1,
        runtime=120,
    log:
        f"{LOGS}/beyond/{{model}}/s{{seed}}/probes.log",
    benchmark:
        f"{BENCH}/beyond/{{model}}/s{{seed}}/probes.tsv"
    conda:
        ENV
    shell:
        "\"$EXPE_PYTHON\" -m expe.cli probe retrieval,passkey --model-dir $(dirname {input.weights:q}) "
        "--data $(dirname {input.shards:q}) --tokenizer {input.tokenizer:q} --split {params.split} "
        "--segment {params.r[segment]} --segments {params.r[segments]} --distances {params.distances} "
        "--multiples {params.multiples} --trials {params.p[trials]} --candidates {params.p[candidates]} "
        "--digits {params.p[digits]} --filler {params.p[filler]} --out $(dirname {output.retrieval:q}) "
        "--threads {threads} --device \"$EXPE_DEVICE\" > {log:q} 2>&1"


rule precision_eval:
    input:
        weights=lambda w: f"{model_dir(w.model, w.seed)}/model.safetensors",
        shards=f"{SHARDS}/{config['eval']['split']}.json",
    output:
        [f"{RES}/beyond/{{model}}/s{{seed}}/precision_{p}.json" for p in config["beyond"]["precision"]["precisions"]],
    params:
        out=lambda w, output: os.path.join(os.path.dirname(output[0]), "precision_{precision}.json"),
        precisions=",".join(config["beyond"]["precision"]["precisions"]),
        multiples=",".join(map(str, config["beyond"]["precision"]["multiples"])),
        max_tokens=f"--max-tokens {config['beyond']['precision']['max_tokens']}"
        if config["beyond"]["precision"]["max_tokens"]
        else "",
        batch=config["eval"]["batch_size"],
        split=config["eval"]["split"],
    threads: 1
    resources:
        gpu=0 if DEVICE == "cpu" else 1,
        runtime=120,
    log:
        f"{LOGS}/beyond/{{model}}/s{{seed}}/precision.log",
    benchmark:
        f"{BENCH}/beyond/{{model}}/s{{seed}}/precision.tsv"
    conda:
        ENV
    shell:
        "\"$EXPE_PYTHON\" -m expe.cli evaluate --model-dir $(dirname {input.weights:q}) --data $(dirname {input.shards:q}) "
        "--out {params.out:q} --precisions {params.precisions} "
        "--multiples {params.multiples} --split {params.split} {params.max_tokens} --batch-size {params.batch} "
        "--threads {threads} --device \"$EXPE_DEVICE\" --no-progress > {log:q} 2>&1"


rule beyond_tables:
    input:
        cfg=CONFIG_FILE,
        index=INDEX_FILE,
        results=beyond_results(),
    output:
        [report(f, category="Beyond the paper", labels={"file": os.path.basename(f)})
         if f.endswith((".png", ".csv")) and "/data/" not in f else f for f in BEYOND_FILES],
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
