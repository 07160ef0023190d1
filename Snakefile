# ExPE reproduction workflow: corpus -> tokenizer -> shards -> training -> evaluation ->
# benchmarks -> tables and plots.  Default target: paper_tables.
#
#   snakemake --cores 2 paper_tables                                 # offline default (CPU)
#   snakemake --cores 1 paper_tables --configfile config/paper.yaml  # Section 4.1 as published
#   snakemake --profile profiles/slurm --configfile config/paper_large.yaml
#   snakemake --cores 2 model_expe_l1                                # one ablation only

include: "workflow/rules/common.smk"


rule paper_tables:
    default_target: True
    input:
        tables=TABLE_FILES,
        plots=PLOT_FILES,
        done=[f"{RES}/tables.done", f"{RES}/plots.done"],  # see workflow/rules/tables.smk


include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/benchmarks.smk"
include: "workflow/rules/tables.smk"
