"""The service's OpenAPI schema, tested by schemathesis: generated requests against every operation
get documented status codes and responses that match their schemas, never a server error."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from edgescene.apps.service import ServiceConfig, create_app

_JOBS = Path(tempfile.mkdtemp(prefix="edgescene-openapi-"))
atexit.register(shutil.rmtree, _JOBS, True)
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(ServiceConfig(jobs_dir=_JOBS, max_upload_mb=1.0)))


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case):
    # Schema-valid is not enough for POST /jobs: random bytes named like a video are refused (415) by the
    # content check, so "valid data is accepted" is not asserted; every other check is.
    case.call_and_validate(excluded_checks=[positive_data_acceptance])
