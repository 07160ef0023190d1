# Length extrapolation: loss at every ev multiple (non-overlapping and sliding windows), per seed and
# per inference-time variant (e.g. ExPE scale 1/2, RoPE YaRN); the settings come as a file whose hash
# names the result, inside the folder of the model it measures.


rule evaluate:
    input:
        weights=lambda w: f"{model_dir(w)}/model.safetensors",
        config=lambda w: f"{model_dir(w)}/config.json",
        spec=f"{RES}/specs/eval/{{ehash}}.json",
        shards=f"{PLAN.shards}/{config['eval']['split']}.json",
    output:
        f"{RES}/models/{{model}}/{{hash}}/eval/{{ehash}}.json",
    params:
        track=f"{RES}/tracking",
        group=config["run_name"],
    threads: 1
    resources:
        gpu=GPU,
        runtime=60,
    log:
        f"{LOGS}/eval/{{model}}.{{hash}}.{{ehash}}.log",
    benchmark:
        f"{BENCH}/eval/{{model}}.{{hash}}.{{ehash}}.tsv"
    conda:
        ENV
    shell:
        "\"$EXPE_PYTHON\" -m expe.cli evaluate --model-dir $(dirname {input.weights:q}) --data $(dirname {input.shards:q}) "
        "--spec-file {input.spec:q} --out {output:q} --track-dir {params.track:q} --track-group {params.group} "
        "--threads {threads} --device \"$EXPE_DEVICE\" --no-progress > {log:q} 2>&1"
