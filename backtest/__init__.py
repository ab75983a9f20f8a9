"""Backtest: the strategy host and risk's pure cores over recorded market data, in one
process, with a written-down fill model (fills.py). See docs/strategies.md."""
