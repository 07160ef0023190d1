"""lm-evaluation-harness's own command line, with our checkpoints registered as model "expe":

    python -m expe.evaluation.lm_eval_cli run --model expe \
        --model_args model_dir=results/default/models/expe_m,tokenizer=results/default/data/tokenizer/tokenizer.model,scale=0.5 \
        --tasks arc_easy --num_fewshot 0
"""

from expe.evaluation.benchmarks import set_offline_if_unreachable


def main() -> None:
    set_offline_if_unreachable()  # before `datasets` is imported
    import expe.evaluation.lm_eval_model  # noqa: F401  (registers model "expe")
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()


if __name__ == "__main__":
    main()
