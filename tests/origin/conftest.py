"""Origin tests reach moto the way a Lambda function reaches AWS: boto3's standard chain."""

from __future__ import annotations

import pytest

from tests.aws import MotoEndpoint


@pytest.fixture
def aws_chain(moto_endpoint: MotoEndpoint, monkeypatch: pytest.MonkeyPatch) -> MotoEndpoint:
    """AWS_ENDPOINT_URL set, so clients the SDK makes itself go to the moto server."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint.url)
    monkeypatch.setenv("AWS_REGION", moto_endpoint.region)
    for name in ("WSGW_ENVIRONMENT", "WSGW_ACCOUNT_ID", "WSGW_REGIONS"):
        monkeypatch.delenv(name, raising=False)
    return moto_endpoint
