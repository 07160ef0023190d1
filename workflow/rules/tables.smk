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
        # under results/ (never committed): on a fresh clone the committed paper_tables/ files
        # alone do not count as up to date, so `snakemake paper_tables` regenerates them
        done=f"{RES}/tables.done",
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
        "expe tables --config {input.cfg} --results {params.results} --out {params.out} > {log} 2>&1 "
        "&& touch {output.done}"


rule plots:
    input:
        cfg=CONFIG_FILE,
        evals=eval_results(MODELS),
    output:
        [report(f, category="Plots") if f.endswith(".png") else f for f in PLOT_FILES],
        done=f"{RES}/plots.done",
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
        "expe plots --config {input.cfg} --results {params.results} --out {params.out} > {log} 2>&1 "
        "&& touch {output.done}"
