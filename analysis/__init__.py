"""The results store and what the results mean: Parquet tables -> summaries -> Plotly figures -> one HTML report.

`analysis.store` is the contract between the side that writes results (`study`, the Ray adapter) and
the side that reads them. Nothing here imports torch, ray, `study` or `trainables`, so a report can be
built on any laptop from a copied results folder (requirements-report.txt).
"""
