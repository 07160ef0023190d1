# The recall study (beyond the paper): every encoding trained on each synthetic task (the `train` rule, no
# corpus), scored inside L and at 1-16 x L; the seeds that did not learn a task get a longer run, decided by
# the checkpoint `recall_learned` once the first runs are scored; copy-augmented language models go through
# the `train`, `evaluate` and `probes` rules like every other model entry.


rule recall_eval:
    input:
        weights=lambda w: f"{model_dir(w)}/model.safetensors",
        config=lambda w: f"{model_dir(w)}/config.json",
        spec=f"{RES}/specs/recall_eval/{{rhash}}.json",
    output:
        f"{RES}/models/{{model}}/{{hash}}/recall/{{rhash}}.json",
    threads: 1
    resources:
        gpu=GPU,
        runtime=60,
    log:
        f"{LOGS}/recall/{{model}}.{{hash}}.{{rhash}}.log",
    benchmark:
        f"{BENCH}/recall/{{model}}.{{hash}}.{{rhash}}.tsv"
    conda:
        ENV
    shell:
        "\"$EXPE_PYTHON\" -m expe.cli recall-eval --model-dir $(dirname {input.weights:q}) --spec-file {input.spec:q} "
        "--out {output:q} --threads {threads} --device \"$EXPE_DEVICE\" > {log:q} 2>&1"


checkpoint recall_learned:
    """Which seeds of each encoding reached recall.threshold in distribution (the rest get the longer run)."""
    input:
        lambda w: PLAN.recall_results(w.task),
    output:
        f"{RES}/recall/{{task}}/learned-{{lhash}}.json",
    log:
        f"{LOGS}/recall/{{task}}.learned.{{lhash}}.log",
    run:
        write_json(output[0], recall_learned_seeds(wildcards.task))


rule recall_index:
    output:
        PLAN.recall_index_file,
    log:
        f"{LOGS}/recall_index.log",
    run:
        write_json(output[0], PLAN.recall_index())


localrules:
    recall_learned,
    recall_index,


rule recall_tables:
    input:
        cfg=PLAN.config_file,
        index=PLAN.recall_index_file,
        results=PLAN.recall_results(),
        learned=[PLAN.learned_file(t) for t in config["recall"]["tasks"]],
        longer=recall_longer,
        lms=PLAN.recall_lm_results(),
    output:
        [report(f, category="Recall", labels={"file": os.path.basename(f)})
         if f.endswith((".png", ".csv")) and "/data/" not in f else f for f in PLAN.recall_files()],
        done=f"{RES}/recall.done",
    params:
        out=lambda w, output: os.path.dirname(output[0]),
    log:
        f"{LOGS}/recall_tables.log",
    benchmark:
        f"{BENCH}/recall_tables.tsv"
    conda:
        ENV
    shell:
        "\"$EXPE_PYTHON\" -m expe.cli recall-tables --config {input.cfg:q} --index {input.index:q} --out {params.out:q} "
        "> {log:q} 2>&1 && touch {output.done:q}"
