"""Builds idis's C extensions; everything else is in pyproject.toml.

The extensions only make things faster (``idis import``: registry/plain_forms.py; cached DNS
answers over UDP: nodes/dns/udp.py), so a machine without a C compiler still installs idis,
with the Python version of the same functions.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "registry._plain_forms",
            sources=["registry/_plain_forms.c"],
            optional=True,
        ),
        Extension("nodes.dns._udp", sources=["nodes/dns/_udp.c"], optional=True),
    ]
)
