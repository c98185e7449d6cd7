"""End-to-end tests on a real Kubernetes cluster (README.md).

A package, so that its ``conftest.py`` is imported as ``cluster.conftest`` and never
replaces ``tests/conftest.py`` as the module ``conftest`` that the other test modules import
from.
"""
