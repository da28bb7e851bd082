"""No credential ever reaches a message: recognisable secrets are set in
every supported way (storage_options, environment, connection strings,
SAS tokens, user:password in endpoint URLs), then every failing call's
exception (str and repr), the objects' reprs, stderr under RUST_LOG=trace
and the CLI's output (text and --json) are scanned for them.

Everything points at 127.0.0.1:1 (refused at once) or is malformed, with
retries off, so the whole scan takes seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from conftest import CLI

SECRETS = {
    "s3_secret": "S3SECRETkey0001",
    "s3_token": "S3SECRETtoken002",
    "password": "PWSECRET0003",
    "sig": "SIGSECRET0004",
    "account_key": "QUNDT1VOVFNFQ1JFVDAwMDU=",
    "client_secret": "CLIENTSECRET0006",
}

# One process does every call: the environment (credentials, RUST_LOG)
# applies to it, and its stderr is part of what is scanned.
SCRIPT = textwrap.dedent(
    """
    import json, sys
    import s3dlio
    from s3dlio import _native

    S = json.loads(sys.argv[1])
    pw, sig, key = S["password"], S["sig"], S["account_key"]
    s3_opts = [
        {"aws_access_key_id": "AKIDTEST", "aws_secret_access_key": S["s3_secret"],
         "aws_session_token": S["s3_token"], "endpoint_url": "http://127.0.0.1:1",
         "max_attempts": "1", "connect_timeout": "1", "read_timeout": "1"},
        {"endpoint_url": f"http://me:{pw}@127.0.0.1:1", "aws_access_key_id": "AKIDTEST",
         "aws_secret_access_key": S["s3_secret"], "max_attempts": "1"},
        {"endpoint_url": f"ftp://me:{pw}@127.0.0.1:1?X-Amz-Signature={sig}"},
        {"endpoint_url": f"127.0.0.1:1/?sig={sig}"},
        {"aws_secret_access_key": S["s3_secret"]},
        {"aws_session_token": S["s3_token"]},
    ]
    az_opts = [
        {"account_key": key, "endpoint": "http://127.0.0.1:1/acct", "max_retries": "0"},
        {"sas_token": f"sv=2022-11-02&sig={sig}", "endpoint": "http://127.0.0.1:1/acct",
         "max_retries": "0"},
        {"connection_string": f"AccountName=acct;AccountKey={key};BlobEndpoint=http://127.0.0.1:1/acct",
         "max_retries": "0"},
        {"connection_string": f"BlobEndpoint=http://127.0.0.1:1/acct;SharedAccessSignature=sv=1&sig={sig}",
         "max_retries": "0"},
        {"connection_string":
            f"AccountName=acct;AccountKey={key};BlobEndpoint=not a url?sig={sig}"},
        {"connection_string": f"AccountName=acct;AccountKey={key};BlobEndpoint=ftp://u:{pw}@h/x"},
        {"endpoint": f"http://me:{pw}@127.0.0.1:1/acct?sig={sig}", "account_key": key,
         "max_retries": "0"},
        {"endpoint": f"nonsense:{pw}?sig={sig}", "account_key": key},
        {"connection_string": f"AccountKey={key};garbage-without-equals"},
        {"account_key": "not base64 " + key, "endpoint": "http://127.0.0.1:1/acct"},
    ]
    calls = [
        ("put_bytes", lambda u, o: s3dlio.put_bytes(u + "/obj", b"x", storage_options=o)),
        ("get_bytes", lambda u, o: s3dlio.get_bytes(u + "/obj", o)),
        ("stat", lambda u, o: s3dlio.stat(u + "/obj", o)),
        ("list", lambda u, o: s3dlio.list(u + "/", o)),
        ("checkpoint", lambda u, o: s3dlio.PyCheckpointStore(
            u + "/ck", storage_options=o).reader().latest_step()),
    ]
    out = []
    def attempt(uri, opts):
        for name, call in calls:
            try:
                res = call(uri, opts)
                out.append(f"{name} ok: {res!r}")
            except BaseException as e:  # every error path is scanned, none is expected to pass
                out.append(f"{name} {type(e).__name__}: {e} | {e!r}")
        try:
            out.append(repr(s3dlio.PyCheckpointStore(uri + "/ck", storage_options=opts)))
        except BaseException as e:
            out.append(f"repr {type(e).__name__}: {e!r}")
    for o in s3_opts:
        attempt("s3://bkt/run", o)
    for o in az_opts:
        attempt("az://acct/ctr/run", o)
    # Credentials from the environment only.
    attempt("s3://bkt/run", None)
    attempt("az://acct/ctr/run", None)
    print(json.dumps(out))
    """
)


def _env() -> dict[str, str]:
    env = os.environ.copy()
    for k in list(env):
        if k.startswith(("AWS_", "AZURE_")):
            del env[k]
    env.update(
        {
            "RUST_LOG": "trace",
            "RUST_BACKTRACE": "1",
            "AWS_ACCESS_KEY_ID": "AKIDENV",
            "AWS_SECRET_ACCESS_KEY": SECRETS["s3_secret"],
            "AWS_SESSION_TOKEN": SECRETS["s3_token"],
            "AWS_ENDPOINT_URL": f"http://me:{SECRETS['password']}@127.0.0.1:1",
            "AWS_MAX_ATTEMPTS": "1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AZURE_STORAGE_CONNECTION_STRING": (
                f"AccountName=acct;AccountKey={SECRETS['account_key']};"
                f"BlobEndpoint=http://127.0.0.1:1/acct?sig={SECRETS['sig']}"
            ),
            "AZURE_CLIENT_SECRET": SECRETS["client_secret"],
        }
    )
    return env


def _found(text: str) -> list[str]:
    return [name for name, value in SECRETS.items() if value in text]


def test_no_secret_in_any_error_repr_log_or_cli_output(scratch) -> None:
    env = _env()
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(SECRETS)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = json.loads(proc.stdout.strip().splitlines()[-1])
    errors = [line for line in lines if " ok: " not in line]
    # Every call fails (nothing listens on 127.0.0.1:1), each with a message.
    assert len(errors) >= 80, lines
    leaks = {line: _found(line) for line in lines if _found(line)}
    assert not leaks, leaks
    assert not _found(proc.stderr), proc.stderr[-4000:]

    cli_runs = 0
    for uri in ("s3://bkt/run/obj", "az://acct/ctr/run/obj"):
        for args in (
            ["stat", uri],
            ["stat", uri, "--json"],
            ["ls", uri.rsplit("/", 1)[0] + "/", "--json"],
            ["cp", uri, str(scratch / "dl")],
            ["verify", uri.rsplit("/", 1)[0], "--json"],
            ["info", uri.rsplit("/", 1)[0], "--json"],
        ):
            run = subprocess.run(
                [*CLI, *args], capture_output=True, text=True, env=env, timeout=120
            )
            cli_runs += 1
            assert run.returncode != 0, (args, run.stdout)
            both = run.stdout + run.stderr
            assert not _found(both), (args, both)
    print(
        "SECRETS-SCAN "
        + json.dumps({"error_paths": len(errors), "cli_runs": cli_runs, "secrets_found": 0})
    )
