"""Entra ID end to end on a real Azurite: no key, SAS or connection string
anywhere, so the backend falls back to its azure_identity chain, whose
Azure CLI credential runs `az account get-access-token`. A stand-in `az` on
PATH answers with a JWT for https://storage.azure.com, which Azurite's
`--oauth basic` mode checks (issuer, audience, nbf/iat/exp; it does not
verify signatures). Bearer tokens need https: Azurite serves a self-signed
certificate for 127.0.0.1 that the client trusts through SSL_CERT_FILE
(our HTTP client is reqwest with rustls, whose platform verifier reads the
roots from SSL_CERT_FILE on Linux).

Each save and load runs in a child process with that environment, so this
process's Azure variables (the shared Azurite's connection string) cannot
leak into it."""

from __future__ import annotations

import base64
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fixtures_azure import ACCOUNT, KEY, azurite_launcher, start_azurite, stop_azurite


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_jwt(audience: str) -> str:
    now = int(time.time())
    header = {"alg": "none", "typ": "JWT"}
    claims = {
        "aud": audience,
        "iss": "https://sts.windows.net/00000000-0000-0000-0000-000000000000/",
        "iat": now - 60,
        "nbf": now - 60,
        "exp": now + 3600,
        "oid": "00000000-0000-0000-0000-000000000001",
    }
    parts = [_b64url(json.dumps(x).encode()) for x in (header, claims)]
    return ".".join(parts) + "."


def make_certificates(root: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it
    (rustls refuses a self-signed CA certificate as the server's own);
    returns (the CA to trust, the server's key) and leaves the server
    certificate in `server.pem`."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=root)

    openssl(
        *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
        *("-subj", "/CN=s3dlio test CA", "-keyout", "ca-key.pem", "-out", "ca.pem"),
    )
    openssl(
        *("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1"),
        *("-keyout", "server-key.pem", "-out", "server.csr"),
    )
    (root / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
    )
    openssl(
        *("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem"),
        *("-CAcreateserial", "-days", "1", "-extfile", "server.ext", "-out", "server.pem"),
    )
    return root / "ca.pem", root / "server-key.pem"


def token_answer(audience: str) -> str:
    """`az account get-access-token -o json` output (azure_identity reads
    accessToken and expires_on)."""
    return json.dumps(
        {
            "accessToken": unsigned_jwt(audience),
            "expiresOn": "2099-01-01 00:00:00.000000",
            "expires_on": int(time.time()) + 3600,
            "tokenType": "Bearer",
        }
    )


@dataclass
class EntraAzurite:
    endpoint: str  # https://127.0.0.1:<port>/devstoreaccount1
    cert: pathlib.Path  # the CA that signed the server's certificate
    bin_dir: pathlib.Path  # holds the stand-in `az`
    calls: pathlib.Path  # one line per `az` invocation
    answer: pathlib.Path  # what `az account get-access-token` prints


@pytest.fixture(scope="module")
def entra_azurite() -> Iterator[EntraAzurite]:
    launcher = azurite_launcher()
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make the test certificate")
    root = pathlib.Path(tempfile.mkdtemp(prefix="s3dlio-entra-"))
    cert, key = make_certificates(root)
    bin_dir = root / "bin"
    bin_dir.mkdir()
    calls = root / "az-calls"
    answer = root / "answer.json"
    answer.write_text(token_answer("https://storage.azure.com"))
    az = bin_dir / "az"
    az.write_text(
        textwrap.dedent(f"""\
            #!/bin/sh
            # Stand-in for the Azure CLI: records the call, prints a token.
            echo "$*" >> '{calls}'
            case "$*" in
              "account get-access-token"*) cat '{answer}' ;;
              *) echo "unexpected az call: $*" >&2; exit 1 ;;
            esac
            """)
    )
    az.chmod(0o755)
    location = root / "azurite"
    location.mkdir()
    server = start_azurite(
        launcher,
        location,
        extra_args=("--oauth", "basic", "--cert", str(root / "server.pem"), "--key", str(key)),
    )
    try:
        yield EntraAzurite(
            f"https://127.0.0.1:{server.port}/{ACCOUNT}", cert, bin_dir, calls, answer
        )
    finally:
        stop_azurite(server.proc)
        shutil.rmtree(root, ignore_errors=True)


def child_env(server: EntraAzurite, trust: bool = True) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AZURE_", "IDENTITY_", "MSI_", "SSL_CERT_"))
    }
    env["PATH"] = f"{server.bin_dir}{os.pathsep}{env.get('PATH', '')}"
    if trust:
        env["SSL_CERT_FILE"] = str(server.cert)
    return env


def run_child(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def make_container(server: EntraAzurite, name: str) -> None:
    """With the account key (the store never creates containers)."""
    from azure.storage.blob import BlobServiceClient

    conn = (
        f"DefaultEndpointsProtocol=https;AccountName={ACCOUNT};AccountKey={KEY};"
        f"BlobEndpoint={server.endpoint};"
    )
    BlobServiceClient.from_connection_string(
        conn, connection_verify=str(server.cert)
    ).create_container(name)


def test_save_and_load_with_an_entra_id_token(entra_azurite: EntraAzurite) -> None:
    make_container(entra_azurite, "entra")
    out = run_child(
        f"""
        import numpy as np
        import s3dlio

        opts = {{"endpoint": {entra_azurite.endpoint!r}}}
        base = "az://{ACCOUNT}/entra/run"
        arr = np.arange(3 << 20, dtype=np.float32)
        s3dlio.save_numpy_array(base + "/w.npy", arr, compression_level=1, storage_options=opts)
        back = s3dlio.load_numpy_array(base + "/w.npy", storage_options=opts)
        assert np.array_equal(arr, back)
        s3dlio.put_bytes(base + "/sub/x", b"x", storage_options=opts)
        print(sorted(s3dlio.list(base + "/", storage_options=opts)))
        """,
        child_env(entra_azurite),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[-2] == str(
        [f"az://{ACCOUNT}/entra/run/sub/x", f"az://{ACCOUNT}/entra/run/w.npy"]
    )
    calls = entra_azurite.calls.read_text().splitlines()
    assert calls and all(c.startswith("account get-access-token") for c in calls), calls
    assert "https://storage.azure.com" in calls[0], calls


def test_a_rejected_token_is_permission_denied(entra_azurite: EntraAzurite) -> None:
    make_container(entra_azurite, "entra-denied")
    good = entra_azurite.answer.read_text()
    entra_azurite.answer.write_text(token_answer("https://vault.azure.net"))
    try:
        out = run_child(
            f"""
            import s3dlio

            opts = {{"endpoint": {entra_azurite.endpoint!r}, "max_retries": "1"}}
            try:
                s3dlio.put_bytes("az://{ACCOUNT}/entra-denied/x", b"x", storage_options=opts)
            except PermissionError as e:
                print("denied:", e)
            """,
            child_env(entra_azurite),
        )
    finally:
        entra_azurite.answer.write_text(good)
    assert out.returncode == 0, out.stderr
    assert "denied:" in out.stdout and "Entra ID token" in out.stdout, out.stdout


def test_an_untrusted_certificate_is_a_clear_error(entra_azurite: EntraAzurite) -> None:
    out = run_child(
        f"""
        import s3dlio

        opts = {{"endpoint": {entra_azurite.endpoint!r}, "max_retries": "1",
                 "retry_timeout": "5"}}
        try:
            s3dlio.put_bytes("az://{ACCOUNT}/entra/untrusted", b"x", storage_options=opts)
        except OSError as e:
            print("failed:", e)
        """,
        child_env(entra_azurite, trust=False),
    )
    assert out.returncode == 0, out.stderr
    assert "failed:" in out.stdout and "certificate" in out.stdout.lower(), out.stdout
