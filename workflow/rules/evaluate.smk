# Length extrapolation: loss at every ev multiple, per inference-time variant (e.g. ExPE scale 1/2).


rule evaluate:
    input:
        weights=lambda w: f"{model_dir(w)}/model.safetensors",
        config=lambda w: f"{model_dir(w)}/config.json",
        shards=f"{SHARDS}/{config['eval']['split']}.json",
    output:
        f"{RES}/eval/{{model}}/{{variant}}.json",
    params:
        device=DEVICE,
        pe=pe_args,
        multiples=",".join(map(str, config["eval"]["multiples"])),
        max_tokens=config["eval"]["max_tokens"] or 0,
        batch=config["eval"]["batch_size"],
        split=config["eval"]["split"],
    threads: 1
    resources:
        runtime=30,
    log:
        f"{LOGS}/eval/{{model}}/{{variant}}.log",
    benchmark:
        f"{BENCH}/eval/{{model}}/{{variant}}.tsv"
    conda:
        ENV
    shell:
        "expe evaluate --model-dir $(dirname {input.weights}) --data $(dirname {input.shards}) --out {output} "
        "--multiples {params.multiples} --split {params.split} --max-tokens {params.max_tokens} "
        "--batch-size {params.batch} --variant {wildcards.variant} {params.pe} --threads {threads} "
        "--device {params.device} --no-progress > {log} 2>&1"
