"""report.md's sections, one module each (or a few close ones per module); see
medsft.evaluation.report for the registry that finds every module here.

Each module defines `SECTIONS = (Section(key, render, compute, order), ...)`. A section imports
what medsft.evaluation may, light ones at module level (a report renders without torch or
Lightning) and anything heavy inside `compute`.
"""
