"""`python -m medsft.publish`, kept for old commands: the tool is `python -m medsft.cli.publish`."""

import runpy

if __name__ == "__main__":
    runpy.run_module("medsft.cli.publish", run_name="__main__", alter_sys=True)
