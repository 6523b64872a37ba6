"""The backtester: the live core (planner and placer) and baseline policies replayed hour by hour on
real prices, Bitcoin data and request traces, scored against a hindsight-optimal LP.

Modules: inputs (files), build (world and workload), simulate (the loop), policies/ (hashserve
and baselines), optimum (the LP), runner (Ray fan-out), report (table, JSON, Markdown, charts),
cli (`hashserve backtest`).
"""
