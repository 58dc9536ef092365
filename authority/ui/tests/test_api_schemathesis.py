"""Schemathesis against the authority's /openapi.json, bounded: generated requests to every
admin operation with the admin token. Checks: no 5xx, every response (status, content type,
body) matches the document, and auth is enforced (the same requests without the token are
refused)."""

import os
import subprocess
import sys

from conftest import ADMIN

ST = os.path.join(os.path.dirname(sys.executable), "st")
MAX_EXAMPLES = os.environ.get("TOLLGATE_SCHEMATHESIS_EXAMPLES", "20")


def test_the_api_conforms_to_its_openapi_document(authority, tmp_path):
    # A tenant for the generated calls to hit (most name one); the rest are refused as
    # unknown tenants or invalid, which must still be 4xx in the documented shape.
    authority.ok("CreateTenant", {"tenant": "acme"})
    cmd = [
        ST, "run", authority.base + "/openapi.json",
        "--header", f"Authorization: Bearer {ADMIN}",
        "--checks", ",".join([
            "not_a_server_error",
            "status_code_conformance",
            "content_type_conformance",
            "response_headers_conformance",
            "response_schema_conformance",
            "ignored_auth",
        ]),
        "--mode", "positive",
        "--phases", "examples,coverage,fuzzing",
        "--max-examples", MAX_EXAMPLES,
        "--seed", "13",
        "--workers", "2",
        "--generation-database", "none",
        "--request-timeout", "30",
        "--no-color",
        "--report", "junit",
        "--report-dir", str(tmp_path),
    ]
    # In the temporary directory: schemathesis keeps a cache where it runs.
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    print(r.stdout[-20000:])
    print(r.stderr[-5000:], file=sys.stderr)
    assert r.returncode == 0, "schemathesis found failures (see the output above)"
