"""Generate, score and compare fine-tuned, base and baseline answers on a test set, with a report.

    python evaluate.py --config configs/eval_demo.yaml          # offline, CPU: the demo run
    python evaluate.py --config configs/eval_demo.yaml --judge.base_url http://127.0.0.1:8000/v1
    python evaluate.py --config configs/eval.yaml --judge.language zh   # the Chinese judge prompt
    export OPENAI_API_KEY=...                                   # the judge's key, never in a config
    python evaluate.py --config configs/eval.yaml --runtime.devices 4   # data-parallel generation
    python evaluate.py --config configs/eval.yaml --generation.max_new_tokens 1024 \\
        --systems+ '{name: run2, path: logs/qlora/version_2}'   # one more system
    python evaluate.py --systems.help SystemSpec                # what a system entry takes
    python evaluate.py --config configs/eval.yaml --print_config   # the resolved config

Systems are base models (hub id, local dir, `random:tiny`), training runs (`logs/<name>/version_N`,
`logs/<name>/latest` = the newest), merged exports, or files of ready answers. Writes into
--output_dir: report.md, report.json, metrics.png, training_<run>.png, generations/ (reused by
later runs whose model, settings and questions are unchanged), judge_cache.jsonl, config.yaml.
See medsft/evaluation/ (one module per job).

Errors print one `error:` line; MEDSFT_DEBUG=1 or --debug shows the traceback. The code:
medsft/cli/evaluate.py.
"""

from medsft.cli.evaluate import cli_main

if __name__ == "__main__":
    cli_main()
