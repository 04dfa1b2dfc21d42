"""`python -m medsft.leakage`, kept for old commands: the tool is `python -m medsft.cli.leakage`."""

import runpy

if __name__ == "__main__":
    runpy.run_module("medsft.cli.leakage", run_name="__main__", alter_sys=True)
