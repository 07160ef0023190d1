# ExPE reproduction workflow: tokenizer -> one-pass data preparation -> training (every model entry,
# every seed) -> evaluation -> benchmarks -> tables and plots. Default target: paper_tables.
#
#   snakemake --cores 2 paper_tables                                    # offline default (CPU)
#   snakemake --cores 2 beyond_paper                                    # probes, precision study, recall study
#   snakemake --cores 2 recall                                          # the recall study alone
#   snakemake --cores 2 model_expe_l1                                   # one ablation only
#   snakemake --cores 16 paper_tables --resources gpu=1 --configfile config/paper.yaml    # one GPU
#   snakemake --profile profiles/slurm paper_tables --configfile config/paper_large.yaml  # Slurm
#
# (--configfile and --resources take several values: put the target before them, or end the list with --.)
import time

_T0 = time.time()


include: "workflow/rules/common.smk"


report: "workflow/report/workflow.rst"


rule paper_tables:
    default_target: True
    input:
        tables=PLAN.table_files(),
        plots=PLAN.plot_files(),
        done=[f"{RES}/tables.done", f"{RES}/plots.done"],  # see workflow/rules/tables.smk


rule beyond_paper:
    input:
        PLAN.beyond_files(),
        f"{RES}/beyond.done",
        PLAN.recall_files(),
        f"{RES}/recall.done",


rule recall:
    input:
        PLAN.recall_files(),
        f"{RES}/recall.done",


include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/benchmarks.smk"
include: "workflow/rules/beyond.smk"
include: "workflow/rules/recall.smk"
include: "workflow/rules/tables.smk"


# Steps that need the internet run on the submitting host under a cluster executor (download_locally).
if config["download_locally"]:

    localrules:
        tokenizer,
        shards,
        benchmark_data,
        data,


onsuccess:
    if not workflow.dryrun:
        _s = time.time() - _T0
        print(f"expe: workflow finished in {int(_s // 60)} min {_s % 60:.0f} s ({_s:.0f} s wall time)")
