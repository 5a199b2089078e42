"""Builds idis's one C extension; everything else is in pyproject.toml.

The extension only makes ``idis import`` faster (see registry/plain_forms.py), so a machine
without a C compiler still installs idis, with the Python version of the same function.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "registry._plain_forms",
            sources=["registry/_plain_forms.c"],
            optional=True,
        )
    ]
)
