# The paper's tables (Markdown, LaTeX, CSV; the paper's numbers beside ours, intervals over seeds),
# the tidy data behind them (paper_tables/data/), and plots.


rule tables:
    input:
        cfg=PLAN.config_file,
        index=PLAN.index_file,
        evals=PLAN.eval_results(PLAN.models),
        benchmarks=PLAN.bench_results(),
        speed=PLAN.speed_file,
        data=f"{PLAN.shards}/manifest.json",
    output:
        [report(f, category="Tables", labels={"file": os.path.basename(f)}) if f.endswith(".csv") else f
         for f in PLAN.table_files()],
        # under results/ (never committed): on a fresh clone the committed paper_tables/ files
        # alone do not count as up to date, so `snakemake paper_tables` regenerates them
        done=f"{RES}/tables.done",
    params:
        out=lambda w, output: os.path.dirname(output[0]),
    log:
        f"{LOGS}/tables.log",
    benchmark:
        f"{BENCH}/tables.tsv"
    conda:
        ENV
    shell:
        "\"$EXPE_PYTHON\" -m expe.cli tables --config {input.cfg:q} --index {input.index:q} --out {params.out:q} > {log:q} 2>&1 "
        "&& touch {output.done:q}"


rule plots:
    input:
        cfg=PLAN.config_file,
        index=PLAN.index_file,
        tidy=f"{PLAN.tables}/data/results.csv",
        evals=PLAN.eval_results(PLAN.models),
    output:
        [report(f, category="Plots", labels={"plot": os.path.basename(f)}) if f.endswith(".png") else f
         for f in PLAN.plot_files()],
        done=f"{RES}/plots.done",
    params:
        out=lambda w, output: os.path.dirname(output[0]),
    log:
        f"{LOGS}/plots.log",
    benchmark:
        f"{BENCH}/plots.tsv"
    conda:
        ENV
    shell:
        "\"$EXPE_PYTHON\" -m expe.cli plots --config {input.cfg:q} --index {input.index:q} --out {params.out:q} > {log:q} 2>&1 "
        "&& touch {output.done:q}"
