"""Shipped suite files (YAML); a package so that setuptools installs them with the code."""
