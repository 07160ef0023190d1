# Length extrapolation: loss at every ev multiple (non-overlapping and sliding windows), per seed
# and per inference-time variant (e.g. ExPE scale 1/2, RoPE YaRN).


rule evaluate:
    input:
        weights=lambda w: f"{model_dir(w.model, w.seed)}/model.safetensors",
        config=lambda w: f"{model_dir(w.model, w.seed)}/config.json",
        shards=f"{SHARDS}/{config['eval']['split']}.json",
    output:
        f"{EVAL}/{{model}}/s{{seed}}/{{variant}}.json",
    params:
        pe=pe_args,
        multiples=",".join(map(str, config["eval"]["multiples"])),
        max_tokens=f"--max-tokens {config['eval']['max_tokens']}" if config["eval"]["max_tokens"] else "",
        sliding=_sliding,
        batch=config["eval"]["batch_size"],
        split=config["eval"]["split"],
        precision=config["eval"]["precision"],
    threads: 1
    resources:
        gpu=0 if DEVICE == "cpu" else 1,
        runtime=60,
    log:
        f"{LOGS}/eval/{{model}}/s{{seed}}/{{variant}}.log",
    benchmark:
        f"{BENCH}/eval/{{model}}/s{{seed}}/{{variant}}.tsv"
    conda:
        ENV
    shell:
        "\"$EXPE_PYTHON\" -m expe.cli evaluate --model-dir $(dirname {input.weights:q}) --data $(dirname {input.shards:q}) --out {output:q} "
        "--multiples {params.multiples} --split {params.split} {params.max_tokens} {params.sliding} "
        "--precision {params.precision} --batch-size {params.batch} --variant {wildcards.variant} {params.pe} "
        "--threads {threads} --device \"$EXPE_DEVICE\" --no-progress > {log:q} 2>&1"
