"""`python -m medsft.export`, kept for old commands: the tool is `python -m medsft.cli.export`."""

import runpy

if __name__ == "__main__":
    runpy.run_module("medsft.cli.export", run_name="__main__", alter_sys=True)
