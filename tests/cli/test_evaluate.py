"""evaluate.py's command line: configs parse with overrides; a config mistake is one `error:`
line, exit 1."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import medsft.cli.evaluate as evaluate_script

ROOT = Path(__file__).resolve().parents[2]


def evaluate_py(tmp_path, *args):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    env.pop("MEDSFT_DEBUG", None)
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "evaluate.py"),
            "--config",
            str(ROOT / "configs/eval_demo.yaml"),
            "--output_dir",
            str(tmp_path / "out"),
            *args,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_config_mistake_is_one_error_line_and_debug_shows_the_traceback(tmp_path, capsys):
    """evaluate.py's entry point (`cli_main`, what the script calls), in this process; the next
    test starts the script itself."""
    from medsft.cli.evaluate import cli_main
    from medsft.errors import ConfigError

    argv = [
        "--config",
        str(ROOT / "configs/eval_demo.yaml"),
        "--output_dir",
        str(tmp_path / "out"),
        "--systems",
        "[{name: x, path: data/sample/baseline_answers.jsonl}]",
    ]
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        cli_main(argv)
    err = capsys.readouterr().err
    assert done.value.code == 1 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == "error: baseline 'gpt' is not a system; choose one of x"
    assert not (tmp_path / "out").exists()  # stopped before anything was written
    # --debug: the exception itself comes out (Python prints its traceback).
    with pytest.raises(ConfigError, match="baseline 'gpt' is not a system"):
        cli_main([*argv, "--debug"])


def test_a_bad_test_set_row_is_one_error_line_naming_the_file_and_row(tmp_path):
    """A data mistake found while evaluating (not in the config) is one line too."""
    bad = tmp_path / "test.jsonl"
    bad.write_text('{"question": "咳嗽"}\n', "utf-8")  # no reference answer
    systems = ("--systems", "[{name: gpt, path: data/sample/baseline_answers.jsonl}]")
    result = evaluate_py(
        tmp_path, *systems, "--test_set.source", str(bad), "--test_set.preset", "huatuo"
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: test_set: {bad}:1: field 'reference': missing"), last


def test_configs_parse_with_dotted_overrides():
    parser = evaluate_script.build_parser()
    for name in ("eval.yaml", "eval_demo.yaml"):
        cfg = parser.parse_args(
            [
                "--config",
                str(ROOT / "configs" / name),
                "--generation.max_new_tokens",
                "7",
                "--judge.base_url",
                "http://127.0.0.1:1/v1",
                "--test_set.limit",
                "2",
            ]
        )
        assert cfg.generation.max_new_tokens == 7 and cfg.test_set.limit == 2
        assert cfg.judge.base_url == "http://127.0.0.1:1/v1"
        names = [s.name for s in cfg.systems]
        assert cfg.baseline in names and "finetuned" in names


@pytest.mark.slow
def test_ctrl_c_while_an_endpoint_answers_is_one_line_and_exit_130(tmp_path):
    """Ctrl-C with requests in flight (an endpoint that takes 30 s per answer): one line, exit
    130, no thread waited for; today Python printed tracebacks and died by the signal. The
    child gets Ctrl-C's usual disposition whatever this process runs with (`pytest &`)."""
    import signal
    import time

    from tests.judge_server import JudgeServer

    def slow(request):
        time.sleep(30)
        return "多喝水。"

    with JudgeServer(slow) as server:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "EP_KEY": "unused"}
        env.update(PYTHONPATH=str(ROOT))
        endpoint = f"{{name: ep, kind: endpoint, path: m, base_url: '{server.base_url}', api_key_env: EP_KEY}}"
        proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "evaluate.py"),
                "--config",
                str(ROOT / "configs/eval_demo.yaml"),
                "--output_dir",
                str(tmp_path / "out"),
                "--systems",
                f"[{endpoint}]",
                "--baseline",
                "null",
                "--mcq_set",
                "null",
            ],
            cwd=ROOT,
            env=env,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        seen = ""
        while "asking" not in seen:
            line = proc.stderr.readline()
            assert line, seen[-2000:]
            seen += line
        time.sleep(1)  # the requests are in flight
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        err = seen + proc.communicate(timeout=120)[1]
        seconds = time.monotonic() - sent
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert proc.returncode == 130, err[-2000:]
    assert len(errors) == 1 and errors[0].startswith("error: interrupted (Ctrl-C)"), err[-2000:]
    assert "Traceback" not in err and seconds < 30, (seconds, err[-2000:])
