"""The Ray cluster of the Ray test modules other than test_ray.py: one fixture, shared.

A module takes it as ``ray_cluster = ray_fixtures.ray_cluster``, importing it
after ``test_ray``, whose import sets Ray's environment and skips the module
where Ray cannot be installed.

Module-scoped, and it reuses a cluster that runs already (test_ray's
session cluster, when test_ray ran first). Not session-scoped: a driver
attaches to one cluster, and test_ray's session fixture calls ``ray.init``
unconditionally, so a cluster of ours that outlived its module would make
that call fail where test_ray runs after it (test_program_output_ray.py
sorts before test_ray.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from test_ray import ray, start_test_cluster


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """The running cluster where there is one; else one like test_ray's, for this module."""
    if ray.is_initialized():
        yield
        return
    start_test_cluster()
    try:
        yield
    finally:
        ray.shutdown()
