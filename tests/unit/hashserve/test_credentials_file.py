"""The local cluster's credentials file: what the CLI and the `openai` SDK read."""

from __future__ import annotations

import stat
from pathlib import Path

from hashserve.client import read_credentials
from hashserve.local import Credentials, write_credentials_file


def test_the_sdk_gets_the_http_front_and_the_customer_key(tmp_path: Path) -> None:
    path = tmp_path / "credentials.env"
    creds = Credentials("hs_customer", "hs_admin", "agent-token", "demo")
    write_credentials_file(path, "127.0.0.1:50051", creds,
                           openai_base_url="http://127.0.0.1:8080/v1")
    saved = read_credentials(path)
    assert saved["OPENAI_BASE_URL"] == "http://127.0.0.1:8080/v1"
    assert saved["OPENAI_API_KEY"] == "hs_customer" == saved["HASHSERVE_API_KEY"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    write_credentials_file(path, "127.0.0.1:50051", creds)
    assert "OPENAI_BASE_URL" not in read_credentials(path)
