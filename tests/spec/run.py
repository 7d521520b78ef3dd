"""The OpenAPI document checked by real clients against a real node (scripts/spec.sh):
1. a tour of every service, each answer validated against the document;
2. a client generated from the document (openapi-python-client), used for a rate query, an
   import and a CDR round trip;
3. schemathesis, as an account and as the operator, with the conformance checks.
Prints one summary line, "spec: N passed, N failed"."""

import os
import pathlib
import subprocess
import sys
import tempfile
import traceback

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import client  # noqa: E402
import node as nodes  # noqa: E402
import tour  # noqa: E402

CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_schema_conformance,response_headers_conformance")


def schemathesis(venv_bin, url, auth, seconds, report):
    done = subprocess.run(
        [str(venv_bin / "st"), "run", url + "/openapi.json", "--checks", CHECKS,
         "-H", f"Authorization: {auth}", "--max-time", str(seconds), "--workers", "1",
         "--request-timeout", "30", "--no-color", "--seed", os.environ.get("SPEC_SEED", "1"),
         "--suppress-health-check", "all", "--warnings", "off"],
        capture_output=True, text=True)
    report.write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-6000:]
        raise AssertionError(f"schemathesis found failures (whole report: {report}):\n{tail}")
    last = [line for line in done.stdout.splitlines() if "generated" in line]
    print("  schemathesis:", last[-1].strip() if last else "done")


def main():
    binary = sys.argv[1]
    venv_bin = pathlib.Path(sys.executable).parent
    seconds = int(os.environ.get("SPEC_SECONDS", "90"))
    out = pathlib.Path(tempfile.mkdtemp(prefix="edgerate-spec-out-"))
    passed = failed = 0
    node = nodes.Node(binary)
    try:
        steps = [
            ("every service's answer matches the document", lambda: tour.Tour(node).run()),
            ("a generated client round trip",
             lambda: client.round_trip(client.generate(node.url, out, venv_bin), node.url,
                                       node.operator_key)),
        ]
        for name, step in steps:
            try:
                n = step()
                print(f"spec ok: {name} ({n} answers)")
                passed += 1
            except Exception:
                print(f"spec FAILED: {name}\n{traceback.format_exc()}")
                failed += 1
        # The tour left cards, CDRs and datasets for schemathesis to find.
        account = tour.Tour(node)
        made = account.call("admin/account/create", {"name": "fuzz", "rps": 1000000,
                                                     "daily": 1000000000})
        for who, auth in (("an account", f"Bearer {made['account']}:{made['key']}"),
                          ("the operator", f"Bearer {node.operator_key}")):
            try:
                schemathesis(venv_bin, node.url, auth, seconds, out / f"schemathesis-{made['name'] if who == 'an account' else 'operator'}.txt")
                print(f"spec ok: schemathesis as {who}")
                passed += 1
            except Exception as e:
                print(f"spec FAILED: schemathesis as {who}\n{e}")
                failed += 1
        if node.process.poll() is not None:
            print("spec FAILED: the node exited:\n" + node.log_text()[-4000:])
            failed += 1
    finally:
        node.stop()
    print(f"spec: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
