"""Runs from names, several seeds, the six-variant grid, and what they report.

`runs` (`run_training`, `resume_training`, `run_seeds`), `start` (the model a run starts from),
`grid` (variants, `run_experiment`), `report` (results.json, model card, plots),
`depth_drift` and `depth_report` (the reversible stack's gradient error at depth, random init and
trained; `benchmarks/memory.py --drift`), `demo_data` (the embedded text the demo trains on).
"""
