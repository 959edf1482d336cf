"""Paper-reproduction benchmark runner: ``python -m mtl_final.benchmark --dataset frappe_x1 ...``.

runner.py runs (model × seed) cells with resume into ``results/<dataset>.csv``; report.py writes
``results/<dataset>.md``; paper_numbers.py holds the FINAL paper's figures.
"""
