"""The `portal` command, run as an admin runs it: a real process, real files, a real port."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import unicodedata
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import trustme
from argon2 import PasswordHasher
from ruamel.yaml import YAML

from tests.conftest import FIXTURES, JWT_SECRET, REPO, minimal_raw


def portal(
    *args: str, stdin: str | None = None, env: Mapping[str, str] | None = None, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    """Run `python -m portal` with the given arguments."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("PORTAL_", "AUTHELIA_"))}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "portal", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=environ,
        cwd=cwd,
        timeout=60,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(tmp_path: Path, port: int) -> Path:
    raw = minimal_raw(tmp_path)
    raw["server"] = {"address": f"tcp://127.0.0.1:{port}"}
    path = tmp_path / "configuration.yml"
    with path.open("w") as handle:
        YAML(typ="safe", pure=True).dump(raw, handle)
    return path


# --- validate-config ---------------------------------------------------------------------------


def demo_directory(tmp_path: Path) -> Path:
    """Lay out what `make run` prepares beside the demo configuration: var/ with the users."""
    (tmp_path / "var").mkdir()
    shutil.copy(REPO / "config" / "users_database.yml", tmp_path / "var" / "users_database.yml")
    return tmp_path


def make_run_secrets(directory: Path) -> dict[str, str]:
    """Generate the secrets `make run` generates and return the variables it passes them in."""
    recipe = (REPO / "Makefile").read_text()
    variables = dict(re.findall(r"(PORTAL_\w+_FILE)=\$\(SECRETS\)/(\w+)", recipe))
    assert len(variables) == 3, recipe  # jwt_secret, storage_encryption_key, session_secret
    secrets = directory / "var" / "secrets"
    secrets.mkdir(mode=0o700)
    for name in variables.values():
        (secrets / name).write_text(portal("crypto", "rand").stdout)
    return {variable: f"var/secrets/{name}" for variable, name in variables.items()}


def test_the_demo_configuration_validates_with_the_variables_make_run_sets(tmp_path: Path) -> None:
    directory = demo_directory(tmp_path)
    result = portal(
        "validate-config",
        "--config",
        str(REPO / "config" / "configuration.yml"),
        env=make_run_secrets(directory),
        cwd=directory,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Configuration is valid."
    assert result.stderr == ""


def test_the_demo_configuration_without_them_names_the_variables_and_how_to_generate_one(
    tmp_path: Path,
) -> None:
    # Issue 12: 'option is required' and nothing else, for secrets `make run` passes as files.
    directory = demo_directory(tmp_path)
    result = portal(
        "validate-config", "--config", str(REPO / "config" / "configuration.yml"), cwd=directory
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: identity_validation.reset_password.jwt_secret: option is required: write it into "
        "a file named by PORTAL_IDENTITY_VALIDATION_RESET_PASSWORD_JWT_SECRET_FILE (or set "
        "PORTAL_IDENTITY_VALIDATION_RESET_PASSWORD_JWT_SECRET, or write it in the configuration "
        "file); generate one with 'portal crypto rand'",
        "error: storage.encryption_key: option is required: write it into a file named by "
        "PORTAL_STORAGE_ENCRYPTION_KEY_FILE (or set PORTAL_STORAGE_ENCRYPTION_KEY, or write it "
        "in the configuration file); generate one with 'portal crypto rand'",
    ]


def test_validate_config_reports_a_missing_users_file(tmp_path: Path) -> None:
    # Issue 12: 'Configuration is valid.', then `serve` refused to start.
    config = write_config(tmp_path, free_port())
    result = portal("validate-config", "--config", str(config))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: authentication_backend.file.path: users file {tmp_path / 'users.yml'}: cannot be "
        "read: No such file or directory"
    ]
    assert result.stdout == ""


def test_validate_config_reports_a_users_file_that_is_not_yaml(tmp_path: Path) -> None:
    config = write_config(tmp_path, free_port())
    (tmp_path / "users.yml").write_text("users:\n  john: {displayname: 'John\n")
    result = portal("validate-config", "--config", str(config))
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(
        f"error: authentication_backend.file.path: users file {tmp_path / 'users.yml'}: is not "
        "valid YAML: "
    )
    assert line.endswith("(line 3, column 1)")


def test_a_yaml_syntax_error_is_reported_alone_on_one_line_with_its_position(
    tmp_path: Path,
) -> None:
    # Issue 12: the error, spread over the line with ruamel's own line breaks, was followed by
    # five consequential 'option is required'.
    bad = tmp_path / "bad.yml"
    bad.write_text("server:\n  address: 'tcp://:9091'\n log:\n  level: debug\n")
    result = portal("validate-config", "--config", str(bad))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: {bad}: not valid YAML: expected <block end>, but found '<block mapping start>' "
        "(line 3, column 2)"
    ]


def test_a_config_path_that_does_not_exist_is_reported_alone(tmp_path: Path) -> None:
    missing = tmp_path / "configuration.yml"
    result = portal("validate-config", "--config", str(missing))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: {missing}: cannot read the configuration file: No such file or directory"
    ]


def test_a_missing_secret_file_is_reported_alone(tmp_path: Path, users_file: Path) -> None:
    raw = minimal_raw(tmp_path)
    del raw["identity_validation"]["reset_password"]["jwt_secret"]
    config = tmp_path / "configuration.yml"
    with config.open("w") as handle:
        YAML(typ="safe", pure=True).dump(raw, handle)
    missing = tmp_path / "jwt_secret"
    result = portal(
        "validate-config",
        "--config",
        str(config),
        env={"PORTAL_IDENTITY_VALIDATION_RESET_PASSWORD_JWT_SECRET_FILE": str(missing)},
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: identity_validation.reset_password.jwt_secret: cannot read the file "
        f"PORTAL_IDENTITY_VALIDATION_RESET_PASSWORD_JWT_SECRET_FILE names ({missing}): No such "
        "file or directory"
    ]


def test_validate_config_reports_file_problems_with_the_others_at_once(tmp_path: Path) -> None:
    raw = minimal_raw(tmp_path)
    raw["log"] = {"level": "loud"}
    raw["notifier"]["template_path"] = str(tmp_path / "templates")
    config = tmp_path / "configuration.yml"
    with config.open("w") as handle:
        YAML(typ="safe", pure=True).dump(raw, handle)
    result = portal("validate-config", "--config", str(config))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: log.level: must be 'trace', 'debug', 'info', 'warn', 'warning' or 'error'",
        f"error: authentication_backend.file.path: users file {tmp_path / 'users.yml'}: cannot be "
        "read: No such file or directory",
        f"error: notifier.template_path: {tmp_path / 'templates'} does not exist",
    ]


def test_validate_config_lists_every_problem_without_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("log:\n  level: loud\nserver:\n  adress: x\n")
    result = portal("validate-config", "--config", str(bad))

    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert (
        "error: log.level: must be 'trace', 'debug', 'info', 'warn', 'warning' or 'error'" in lines
    )
    assert "error: server.adress: unknown option (check the spelling and the indentation)" in lines
    assert "error: identity_validation: option is required" in lines
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_validate_config_prints_warnings_for_authelia_keys_it_ignores(
    tmp_path: Path, users_file: Path
) -> None:
    result = portal(
        "validate-config",
        "--config",
        str(FIXTURES / "configuration.yml"),
        env={
            "AUTHELIA_IDENTITY_VALIDATION_RESET_PASSWORD_JWT_SECRET": JWT_SECRET,
            # Its files are where a container would mount them; validate-config checks they exist.
            "PORTAL_AUTHENTICATION_BACKEND_FILE_PATH": str(users_file),
            "PORTAL_STORAGE_LOCAL_PATH": str(tmp_path / "db.sqlite3"),
        },
    )
    assert result.returncode == 0, result.stderr
    assert "warning: ntp: not supported by the portal; ignored" in result.stderr.splitlines()
    # Read since issues 15 and 16: no warning names them.
    assert not any("totp" in line or "webauthn" in line for line in result.stderr.splitlines())


def test_the_config_path_may_come_from_the_environment(tmp_path: Path, users_file: Path) -> None:
    path = write_config(tmp_path, 9999)
    result = portal("validate-config", env={"PORTAL_CONFIG": str(path)})
    assert result.returncode == 0, result.stderr


# --- crypto ------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["argon2", "sha2crypt", "pbkdf2", "bcrypt", "scrypt"])
def test_hash_generate_then_validate_round_trips(algorithm: str) -> None:
    generated = portal("crypto", "hash", "generate", algorithm, "--password", "correct horse")
    assert generated.returncode == 0, generated.stderr
    assert generated.stdout.startswith("Digest: $")
    digest = generated.stdout.strip().removeprefix("Digest: ")

    good = portal("crypto", "hash", "validate", "--password", "correct horse", "--", digest)
    bad = portal("crypto", "hash", "validate", "--password", "wrong horse", "--", digest)
    assert (good.returncode, bad.returncode) == (0, 1)


def test_hash_generate_defaults_to_authelias_argon2id_parameters() -> None:
    result = portal("crypto", "hash", "generate", "argon2", "--password", "pw")
    digest = result.stdout.strip().removeprefix("Digest: ")
    assert digest.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert PasswordHasher().verify(digest, "pw")


def test_hash_generate_reads_the_password_from_stdin() -> None:
    result = portal("crypto", "hash", "generate", "argon2", stdin="from stdin\n")
    digest = result.stdout.strip().removeprefix("Digest: ")
    assert PasswordHasher().verify(digest, "from stdin")


def test_hash_generate_refuses_an_empty_password() -> None:
    result = portal("crypto", "hash", "generate", "argon2", stdin="\n")
    assert result.returncode == 1
    assert result.stderr.strip() == "error: the password must not be empty"


def test_hash_validate_checks_a_sha512_crypt_hash_from_the_users_file() -> None:
    users = YAML(typ="safe", pure=True).load((FIXTURES / "users.yml").read_text())
    digest = users["users"]["john"]["password"]
    assert digest.startswith("$6$rounds=500000$")
    good = portal("crypto", "hash", "validate", "--password", "password", "--", digest)
    bad = portal("crypto", "hash", "validate", "--password", "Password", "--", digest)
    assert good.returncode == 0
    assert good.stdout.strip() == "The password matches the digest."
    assert bad.returncode == 1


NFC = "Corr3ct-Horse-Battery-\u00c4\u00d6\u00dc"
NFD = unicodedata.normalize("NFD", NFC)


def test_hash_generate_hashes_the_normalized_form_and_validate_takes_either() -> None:
    generated = portal("crypto", "hash", "generate", "argon2", "--password", NFD)
    digest = generated.stdout.strip().removeprefix("Digest: ")
    assert PasswordHasher().verify(digest, NFC)  # NFKC, as the portal's own writes
    results = [
        portal("crypto", "hash", "validate", "--password", typed, "--", digest).returncode
        for typed in (NFC, NFD, NFC + "!")
    ]
    assert results == [0, 0, 1]


def test_hash_validate_accepts_a_hash_of_the_password_exactly_as_typed() -> None:
    digest = PasswordHasher().hash(NFD)  # made by a tool that does not normalize
    validated = portal("crypto", "hash", "validate", "--password", NFD, "--", digest)
    assert validated.returncode == 0
    assert validated.stdout.strip() == "The password matches the digest."


def test_hash_validate_of_an_unreadable_hash_fails_with_one_line() -> None:
    result = portal("crypto", "hash", "validate", "--password", "x", "--", "$md5$nope")
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_rand_prints_alphanumeric_of_the_asked_length() -> None:
    default = portal("crypto", "rand").stdout.strip()
    short = portal("crypto", "rand", "--length", "20").stdout.strip()
    assert len(default) == 64 and default.isalnum()
    assert len(short) == 20 and short.isalnum()
    assert portal("crypto", "rand").stdout.strip() != default


def test_rand_refuses_a_silly_length() -> None:
    result = portal("crypto", "rand", "--length", "0")
    assert result.returncode == 1
    assert result.stderr.strip() == "error: --length must be between 1 and 4096"


def test_an_unknown_command_is_one_clear_error() -> None:
    result = portal("frobnicate")
    assert result.returncode == 2
    assert "invalid choice: 'frobnicate'" in result.stderr


# --- serve -------------------------------------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path, users_file: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    config = write_config(tmp_path, port)
    process = subprocess.Popen(
        [sys.executable, "-m", "portal", "serve", "--config", str(config)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process, port
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


def wait_for_health(port: int, process: subprocess.Popen[str]) -> dict[str, str]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as r:
                return {"status": str(r.status), "body": r.read().decode()}
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the portal did not start listening")


def test_serve_listens_and_stops_cleanly_on_sigterm(
    served: tuple[subprocess.Popen[str], int], tmp_path: Path
) -> None:
    process, port = served
    assert wait_for_health(port, process) == {"status": "200", "body": '{"status": "OK"}'}
    assert (tmp_path / "db").exists()

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0
    _, stderr = process.communicate()
    assert "portal listening on tcp://127.0.0.1:" in stderr
    assert "Traceback" not in stderr


def test_serve_with_a_broken_backend_exits_before_opening_the_port(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, port)
    (tmp_path / "users.yml").write_text("users: [not, a, mapping]\n")
    result = portal("serve", "--config", str(config), cwd=tmp_path)

    assert result.returncode == 1
    assert "error:" in result.stderr
    assert "users.yml" in result.stderr
    assert "Traceback" not in result.stderr
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0


@contextlib.contextmanager
def taken_port() -> Iterator[int]:
    """Hold a loopback port another process listens on; yield its number."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def busy_error(result: subprocess.CompletedProcess[str]) -> str:
    """Return the one error line of a serve that found its address taken (exit 1, no trace)."""
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "address already in use" in errors[0]
    assert "Traceback" not in result.stderr
    return errors[0]


def test_serve_with_a_busy_address_names_the_key_in_one_line(
    tmp_path: Path, users_file: Path
) -> None:
    with taken_port() as busy:
        config = write_config(tmp_path, busy)
        result = portal("serve", "--config", str(config), cwd=tmp_path)

    # As for the metrics' and the authz listener's addresses: the key, the address, the reason.
    expected = f"error: server.address: cannot listen on tcp://127.0.0.1:{busy}: "
    assert busy_error(result).startswith(expected)


def test_serve_with_a_busy_metrics_address_says_so_in_one_line_and_opens_nothing(
    tmp_path: Path, users_file: Path
) -> None:
    port = free_port()
    config = write_config(tmp_path, port)
    raw = YAML(typ="safe", pure=True).load(config.read_text())
    with taken_port() as busy:
        address = f"tcp://127.0.0.1:{busy}/metrics"
        raw["telemetry"] = {"metrics": {"enabled": True, "address": address}}
        with config.open("w") as handle:
            YAML(typ="safe", pure=True).dump(raw, handle)
        result = portal("serve", "--config", str(config), cwd=tmp_path)

    expected = f"error: telemetry.metrics.address: cannot listen on {address}: "
    assert busy_error(result).startswith(expected)
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0


def test_serve_with_a_bad_configuration_exits_with_the_problems(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("server:\n  address: 'ftp://x'\n")
    result = portal("serve", "--config", str(bad))
    assert result.returncode == 1
    assert "error: server.address: scheme 'ftp' is not supported" in result.stderr


def test_serve_reports_every_local_problem_at_once_before_opening_the_port(
    tmp_path: Path,
) -> None:
    # serve used to stop at the first backend that failed, and took a missing template_path.
    port = free_port()
    raw = minimal_raw(tmp_path)
    raw["server"] = {"address": f"tcp://127.0.0.1:{port}"}
    raw["notifier"]["template_path"] = str(tmp_path / "templates")
    config = tmp_path / "configuration.yml"
    with config.open("w") as handle:
        YAML(typ="safe", pure=True).dump(raw, handle)
    result = portal("serve", "--config", str(config), cwd=tmp_path)

    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: authentication_backend.file.path: users file {tmp_path / 'users.yml'}: cannot be "
        "read: No such file or directory",
        f"error: notifier.template_path: {tmp_path / 'templates'} does not exist",
    ]
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0


def test_serve_says_which_address_mails_use_when_the_listening_address_changes(
    tmp_path: Path, users_file: Path
) -> None:
    # Issue 12: PORTAL_SERVER_ADDRESS moved the port; links in mails stayed on the old one.
    config = write_config(tmp_path, free_port())
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("PORTAL_", "AUTHELIA_"))}
    process = subprocess.Popen(
        [sys.executable, "-m", "portal", "serve", "--config", str(config)],
        cwd=tmp_path,
        env={**environ, "PORTAL_SERVER_ADDRESS": f"tcp://127.0.0.1:{port}"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_health(port, process)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)
    assert (
        f"portal listening on tcp://127.0.0.1:{port}; links in mails use https://auth.example.com "
        "(session.cookies[0].authelia_url; changing the listening address does not change it)"
    ) in stderr


def test_validate_config_tells_a_configuration_for_the_old_certificate_chain_what_to_do(
    tmp_path: Path,
) -> None:
    # Issue 12: certificate_chain once meant a CA to trust; in Authelia it is a client certificate.
    raw = minimal_raw(tmp_path)
    (tmp_path / "users.yml").write_text((REPO / "config" / "users_database.yml").read_text())
    ca = trustme.CA()
    raw["notifier"] = {
        "smtp": {
            "address": "submissions://127.0.0.1:1",  # never contacted
            "sender": "portal@example.com",
            "tls": {"certificate_chain": ca.cert_pem.bytes().decode()},
        }
    }
    raw["certificates_directory"] = str(tmp_path / "no-such-folder")
    config = tmp_path / "configuration.yml"
    with config.open("w") as handle:
        YAML(typ="safe", pure=True).dump(raw, handle)
    result = portal("validate-config", "--config", str(config))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: certificates_directory: cannot read the folder {tmp_path / 'no-such-folder'}: "
        "No such file or directory",
        "error: notifier.smtp.tls.certificate_chain: is the client certificate presented for "
        "mutual TLS (as in Authelia) and needs private_key; to trust a private CA instead, "
        "remove certificate_chain and put the CA's certificate in the folder named by the "
        "top-level certificates_directory",
    ]
