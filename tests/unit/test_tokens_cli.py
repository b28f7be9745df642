"""`escape-fed token`: every bad input gives one clear message and its exit code, writes nothing.

No lab needed: the issuer here is absent, unreachable, or a local HTTPS server whose
certificate the deployment CA did not sign.
"""

from __future__ import annotations

import http.server
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import LAB_FEDERATION
from tests.labfed import cli

ASTRO = "/escape/astro"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return cli(*args, timeout=120)


def federation(tmp_path: Path, issuer: str | None = None) -> Path:
    """The lab federation with its secrets under tmp_path (and another issuer URL)."""
    data: dict[str, Any] = yaml.safe_load(LAB_FEDERATION.read_text())
    data["security"] = {**data.get("security", {}), "secrets_dir": str(tmp_path / "secrets")}
    data["control"] = {"state_dir": str(tmp_path / "state")}
    if issuer:  # an outside issuer (as a real IAM is): no lab host runs one
        data["iam"]["issuer"] = issuer
        for site in data["sites"].values():
            for host in site.get("hosts", {}).values():
                host["roles"] = [r for r in host.get("roles", []) if r != "issuer"]
    path = tmp_path / "fed.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def deployed(tmp_path: Path, ca: Path | None = None) -> Path:
    """Secrets as the issuer's deployment leaves them: a client secret and the deployment CA."""
    base = tmp_path / "secrets" / "escape-lab"
    clients = base / "iam" / "clients"
    clients.mkdir(parents=True, mode=0o700)
    (clients / "escape-lab-astro.secret").write_text("not-a-real-secret\n")
    (base / "ca").mkdir(mode=0o700)
    target = base / "ca" / "ca.crt"
    target.write_bytes((ca or Path("/etc/ssl/certs/ca-certificates.crt")).read_bytes())
    return target


def assert_refused(proc: subprocess.CompletedProcess[str], code: int, out: Path, *words: str):
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in proc.stderr, (word, proc.stderr)
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def test_token_is_a_command_with_help() -> None:
    top = run("--help")
    assert "  token " in top.stdout
    proc = run("token", "--help")
    assert proc.returncode == 0
    for text in ("--group", "--scope", "--output", "0600", "never printed"):
        assert text in proc.stdout, text


def test_group_is_required(tmp_path: Path) -> None:
    proc = run("token", str(tmp_path / "t"))
    assert proc.returncode == 2 and "--group" in proc.stderr
    assert not (tmp_path / "t").exists()


def test_unknown_group(tmp_path: Path) -> None:
    fed = federation(tmp_path)
    deployed(tmp_path)
    out = tmp_path / "t"
    proc = run("token", str(out), "-f", str(fed), "--group", "/escape/nobody")
    assert_refused(proc, 2, out, "/escape/nobody", "/escape/astro", "/escape/hep")


def test_scope_with_spaces(tmp_path: Path) -> None:
    fed = federation(tmp_path)
    deployed(tmp_path)
    out = tmp_path / "t"
    proc = run("token", str(out), "-f", str(fed), "-g", ASTRO, "--scope", "compute.read x")
    assert_refused(proc, 2, out, "--scope")


def test_output_is_a_directory(tmp_path: Path) -> None:
    fed = federation(tmp_path)
    deployed(tmp_path)
    proc = run("token", str(tmp_path), "-f", str(fed), "-g", ASTRO)
    assert proc.returncode == 2 and "is a directory" in proc.stderr, proc.stderr


def test_output_directory_missing(tmp_path: Path) -> None:
    fed = federation(tmp_path)
    deployed(tmp_path)
    out = tmp_path / "nowhere" / "t"
    proc = run("token", str(out), "-f", str(fed), "-g", ASTRO)
    assert proc.returncode == 2 and "no such directory" in proc.stderr, proc.stderr
    assert not out.parent.exists()


def test_not_deployed_yet(tmp_path: Path) -> None:
    fed = federation(tmp_path)
    out = tmp_path / "t"
    proc = run("token", str(out), "-f", str(fed), "--group", ASTRO)
    assert_refused(proc, 1, out, "escape-lab-astro", "not deployed", "escape-fed deploy")


def test_no_deployment_ca(tmp_path: Path) -> None:
    fed = federation(tmp_path)
    (deployed(tmp_path)).unlink()
    out = tmp_path / "t"
    proc = run("token", str(out), "-f", str(fed), "--group", ASTRO)
    assert_refused(proc, 1, out, "no deployment CA")


def test_issuer_unreachable(tmp_path: Path) -> None:
    fed = federation(tmp_path, issuer="https://127.0.0.1:9/")  # discard port: nothing listens
    deployed(tmp_path)
    out = tmp_path / "t"
    proc = run("token", str(out), "-f", str(fed), "--group", ASTRO, "-o", "json")
    assert_refused(proc, 1, out, "unreachable", "https://127.0.0.1:9/")


@pytest.fixture
def foreign_https(tmp_path: Path) -> Iterator[str]:
    """An HTTPS server on 127.0.0.1 whose self-signed certificate no deployment CA signed."""
    key, crt = tmp_path / "srv.key", tmp_path / "srv.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key), "-out", str(crt), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(crt, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_tls_is_checked_against_the_deployment_ca(tmp_path: Path, foreign_https: str) -> None:
    fed = federation(tmp_path, issuer=foreign_https)
    deployed(tmp_path)
    out = tmp_path / "t"
    proc = run("token", str(out), "-f", str(fed), "--group", ASTRO)
    assert_refused(proc, 1, out, "TLS", "ca.crt")


# --- no clobbering: FILE is replaced only if it is a token file escape-fed wrote -------------

JWT = "eyJhbGciOiAiRVMyNTYifQ.eyJzdWIiOiAieCJ9.c2lnbmF0dXJl"  # {"alg":"ES256"}.{"sub":"x"}.sig


def snapshot(path: Path) -> tuple[bytes, int, int]:
    st = path.stat()
    return path.read_bytes(), st.st_mtime_ns, st.st_mode


def test_the_federation_file_given_as_the_token_file_is_left_byte_identical(
    tmp_path: Path,
) -> None:
    """What habit types: `escape-fed token FED.yaml --group G` (the file first, as everywhere
    else). The issuer is deployed and would answer: only the guard stands in the way."""
    fed = federation(tmp_path)
    deployed(tmp_path)
    before = snapshot(fed)
    proc = run("token", str(fed), "-f", str(fed), "--group", ASTRO)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {fed}: exists and is not a token")
    assert "--force" in proc.stderr and proc.stdout == ""
    assert snapshot(fed) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(f".{fed.name}.")]


def test_the_lab_federation_file_itself_is_never_overwritten(tmp_path: Path) -> None:
    """The exact command of the report, on a copy of the lab federation (default -f)."""
    from click.testing import CliRunner

    from escape_fed.cli.main import main

    fed = tmp_path / "federation.yaml"
    fed.write_bytes(LAB_FEDERATION.read_bytes())
    before = snapshot(fed)
    result = CliRunner().invoke(main, ["token", str(fed), "--group", ASTRO])
    assert result.exit_code == 2, result.output
    assert str(fed) in result.stderr
    assert snapshot(fed) == before


@pytest.mark.parametrize(
    ("text", "mode"),
    [
        ("hello\n", 0o600),  # not a JWT
        (JWT + "\n", 0o644),  # a JWT others may read: not as escape-fed writes them
        (JWT + "\n" + JWT + "\n", 0o600),  # two lines
        ("a.b.c\n", 0o600),  # three parts, not JSON
        ("", 0o600),
    ],
)
def test_files_escape_fed_did_not_write_are_not_token_files(
    tmp_path: Path, text: str, mode: int
) -> None:
    from escape_fed.errors import BadInput
    from escape_fed.ops.tokens import check_output, is_token_file

    path = tmp_path / "t"
    path.write_text(text)
    path.chmod(mode)
    assert not is_token_file(path)
    with pytest.raises(BadInput, match=f"{path}: exists and is not a token file"):
        check_output(path)
    check_output(path, force=True)  # asked to: allowed


def test_a_link_is_not_a_token_file(tmp_path: Path) -> None:
    from escape_fed.ops.tokens import is_token_file

    target = tmp_path / "real.tok"
    target.write_text(JWT + "\n")
    target.chmod(0o600)
    link = tmp_path / "link.tok"
    link.symlink_to(target)
    assert is_token_file(target) and not is_token_file(link)


def test_fetching_again_into_its_own_token_file_is_allowed(tmp_path: Path) -> None:
    """The positive twin: a token file as escape-fed writes it (write_private) passes the guard,
    and the CLI goes on to the issuer (here: not deployed, exit 1, the file untouched)."""
    from escape_fed.ops.tokens import check_output, is_token_file, write_private

    out = tmp_path / "astro.tok"
    write_private(out, JWT + "\n")
    assert is_token_file(out)
    check_output(out)
    fed = federation(tmp_path)
    before = snapshot(out)
    proc = run("token", str(out), "-f", str(fed), "--group", ASTRO)
    assert proc.returncode == 1 and "not deployed" in proc.stderr, proc.stderr
    assert snapshot(out) == before


def test_force_replaces_any_file(tmp_path: Path) -> None:
    """--force passes the guard: the command goes on to the issuer (not deployed here)."""
    fed = federation(tmp_path)
    other = tmp_path / "notes.txt"
    other.write_text("mine\n")
    proc = run("token", str(other), "-f", str(fed), "--group", ASTRO, "--force")
    assert proc.returncode == 1 and "not deployed" in proc.stderr, proc.stderr
    help_text = run("token", "--help").stdout
    assert "--force" in help_text
