"""`pfcbench publish`: results folders (and packaged matrices) as a static site that opens from the file system.

The modules: sweeps (what the folders hold: one Sweep each, the same matrix's machines and runs
grouped), html (the only place a table of entries becomes HTML), charts (plotly figures as data),
pages (one function per page), site (the folder written whole, its assets, a local server). The
pages are built from the values the markdown report uses (bench.report.tables' entries, its legend,
its predicted column); nothing here re-derives a figure.
"""
