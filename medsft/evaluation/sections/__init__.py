"""report.md's sections, one module each (or a few close ones per module); see
medsft.evaluation.report for the registry that finds every module here.

Each module defines `SECTIONS = (Section(key, render, compute, order), ...)`. Imports stay light
at module level (a report renders without torch or Lightning): anything heavy is imported inside
`compute`.
"""
