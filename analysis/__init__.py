"""The results store and what the results mean: Parquet tables -> summaries -> Plotly figures -> one HTML report.

store.py is the contract between the side that writes results (the trial, through
trainables/ray_train.py; the driver for failed trials and measurements) and the side that reads them:
schemas (trials/ and epochs/ derived from the trial record the writer passes), atomic writes, reading
back. load.py, summarize.py, figures.py, report.py read. Nothing here imports torch, ray, `study` or
`trainables`, so a report can be built on any laptop from a copied results folder
(requirements-report.txt).
"""
