"""What the results mean: Parquet tables -> summaries -> Plotly figures -> one HTML report.

Imports neither torch nor ray, so a report can be built on any laptop from a copied results folder.
"""
