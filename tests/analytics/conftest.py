"""One SparkSession for the whole test run (Spark tests are marked ``slow``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    pytest.importorskip("pyspark")
    from headend.analytics.spark import spark_session

    yield spark_session()
