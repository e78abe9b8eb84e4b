"""The HTTP API serves HTTPS when a certificate and key are configured."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from dev.process import LOCALHOST
from kafkastore.config import Settings, running_in_ci
from tests.support.serving import serve_process


def _self_signed(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            f"/CN={LOCALHOST}",
            "-addext",
            f"subjectAltName=IP:{LOCALHOST}",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


# Without openssl (dev/bootstrap.sh installs it) the test skips, and under CI=true it fails.
@pytest.mark.skipif(
    shutil.which("openssl") is None and not running_in_ci(),
    reason="needs openssl (dev/bootstrap.sh)",
)
def test_with_a_certificate_and_key_the_api_answers_https_only(
    make_settings: Callable[..., Settings], tmp_path: Path, logs_dir: Path
) -> None:
    cert, key = _self_signed(tmp_path)
    settings = make_settings(tls_certfile=str(cert), tls_keyfile=str(key))
    proc, url = serve_process(
        settings, logs_dir / f"tls-{settings.topic}.log", ready_line="Uvicorn running on https://"
    )
    assert url.startswith("https://")
    with proc:
        verified = ssl.create_default_context(cafile=str(cert))
        answer = httpx.get(f"{url}/healthz", verify=verified, timeout=10)
        assert answer.status_code == 200
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{url.replace('https://', 'http://')}/healthz", timeout=5)
