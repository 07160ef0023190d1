# One training job per model entry and seed. Checkpoints live outside `output:` (Snakemake deletes
# outputs before rerunning a job), so a rerun after a kill or preemption resumes from the latest one.
# The device and the number of processes are not params: changing them never deletes a trained model.


rule model_spec:
    output:
        f"{RES}/models/{{model}}/{{hash}}/spec.json",
    log:
        f"{LOGS}/specs/{{model}}.{{hash}}.log",
    run:
        write_json(output[0], PLAN.spec_of_dir(os.path.dirname(output[0])))


localrules:
    model_spec,


rule train:
    input:
        spec=rules.model_spec.output,
        shards=lambda w: [] if PLAN.is_task(w.model) else f"{PLAN.shards}/train.json",  # a recall task needs no corpus
    output:
        weights=f"{RES}/models/{{model}}/{{hash}}/model.safetensors",
        config=f"{RES}/models/{{model}}/{{hash}}/config.json",
        metrics=f"{RES}/models/{{model}}/{{hash}}/metrics.jsonl",
    params:
        data=lambda w: "" if PLAN.is_task(w.model) else f"--data {shlex.quote(PLAN.shards)}",
        checkpoints=lambda w: PLAN.checkpoints(model_dir(w)),
        track=f"{RES}/tracking",
        group=config["run_name"],
    threads: 1
    resources:
        # one node: --gpus N; several nodes: N GPUs per node as GRES (the plugin's --gpus is a job total)
        gpu=lambda w: C.gpus(config, w.model) if DEVICE != "cpu" and C.nodes(config, w.model) == 1 else 0,
        gres=lambda w: f"gpu:{C.gpus(config, w.model)}" if DEVICE != "cpu" and C.nodes(config, w.model) > 1 else "",
        nodes=lambda w: C.nodes(config, w.model),
        nproc=lambda w: C.gpus(config, w.model),  # > 1: DDP under torchrun (expe.training.launch); not a rerun trigger
        runtime=60,
    log:
        f"{LOGS}/train/{{model}}.{{hash}}.log",
    benchmark:
        f"{BENCH}/train/{{model}}.{{hash}}.tsv"
    conda:
        ENV
    shell:
        "\"$EXPE_PYTHON\" -m expe.cli train --nproc {resources.nproc} --spec-file {input.spec:q} "
        "{params.data} --out $(dirname {output.weights:q}) --checkpoints {params.checkpoints:q} "
        "--track-dir {params.track:q} --track-group {params.group} --threads {threads} --device \"$EXPE_DEVICE\" "
        "--no-progress >> {log:q} 2>&1"


# The step time of every table model in one process, interleaved repeats; serialised (all cores
# and the `speed` resource), so nothing runs beside it and the ratios in Tables 1 and 7 mean something.
rule speed:
    input:
        weights=PLAN.weights(C.table_models(config)),
        spec=PLAN.speed_spec,  # the settings and table models' specs only: no other key reruns it
        shards=f"{PLAN.shards}/train.json",
    output:
        PLAN.speed_file,
    threads: all_cores()
    resources:
        speed=1,
        gpu=GPU,
        runtime=60,
    log:
        f"{LOGS}/speed.log",
    benchmark:
        f"{BENCH}/speed.tsv"
    conda:
        ENV
    shell:
        "\"$EXPE_PYTHON\" -m expe.cli speed --spec-file {input.spec:q} --data $(dirname {input.shards:q}) "
        "--out {output:q} --device \"$EXPE_DEVICE\" > {log:q} 2>&1"


# `snakemake --cores 2 model_<name>` trains and evaluates one entry (e.g. one ablation) only.
for _m in PLAN.models:

    rule:
        name:
            f"model_{_m}"
        input:
            PLAN.eval_results([_m]),
