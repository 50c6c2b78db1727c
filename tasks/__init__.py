"""Benchmarks: on-disk dataset readers, recipes, runners, exporters to HEAR/s3prl, and the embedded corpus."""
