# The paper's tables (Markdown, LaTeX, CSV; the paper's numbers beside ours) and plots.


rule tables:
    input:
        cfg=CONFIG_FILE,
        evals=eval_results(MODELS),
        benchmarks=benchmark_results(),
        data=f"{SHARDS}/manifest.json",
        corpus=f"{DATA}/corpus/manifest.json",
    output:
        [report(f, category="Tables") if f.endswith(".csv") else f for f in TABLE_FILES],
    params:
        results=lambda w, input: os.path.dirname(os.path.dirname(input.cfg)),  # results/<run>
        out=lambda w, output: os.path.dirname(output[0]),
    log:
        f"{LOGS}/tables.log",
    benchmark:
        f"{BENCH}/tables.tsv"
    conda:
        ENV
    shell:
        "expe tables --config {input.cfg} --results {params.results} --out {params.out} > {log} 2>&1"


rule plots:
    input:
        cfg=CONFIG_FILE,
        evals=eval_results(MODELS),
    output:
        [report(f, category="Plots") if f.endswith(".png") else f for f in PLOT_FILES],
    params:
        results=lambda w, input: os.path.dirname(os.path.dirname(input.cfg)),  # results/<run>
        out=lambda w, output: os.path.dirname(output[0]),
    log:
        f"{LOGS}/plots.log",
    benchmark:
        f"{BENCH}/plots.tsv"
    conda:
        ENV
    shell:
        "expe plots --config {input.cfg} --results {params.results} --out {params.out} > {log} 2>&1"
