"""Suites, results store, leaderboard tables and performance benchmarks."""
