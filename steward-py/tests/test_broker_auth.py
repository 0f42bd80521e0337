"""Connecting to a broker that authenticates its clients: user and password, token, TLS with a CA
made in the test (openssl), mutual TLS. The right settings deliver a shellCommand end to end;
wrong ones make start() raise BrokerAuthError at once, saying what to fix, and nothing runs."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import time
from typing import Iterator

import pytest

import steward
from conftest import FAST, OPEN, READY_TIMEOUT, POLL, accepts_clients, free_port, nats_server_bin


class ConfiguredServer:
    """A nats-server started from a config file (authorization, TLS) on a free loopback port."""

    def __init__(self, tmp: pathlib.Path, config: str) -> None:
        self.port = free_port()
        conf = tmp / f"nats-{self.port}.conf"
        conf.write_text(f'listen: "127.0.0.1:{self.port}"\n{config}\n')
        self.proc = subprocess.Popen(
            [nats_server_bin(), "-c", str(conf), "-l", str(tmp / f"nats-{self.port}.log")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + READY_TIMEOUT
        # The INFO line comes in plain text first, also from a TLS server.
        while not accepts_clients(self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.proc.returncode}; config:\n{config}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("nats-server did not accept clients in time")
            time.sleep(POLL)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def server_with(tmp_path: pathlib.Path) -> Iterator[object]:
    """server_with(config) starts a configured nats-server; all are stopped at the end."""
    started: list[ConfiguredServer] = []

    def start(config: str) -> ConfiguredServer:
        s = ConfiguredServer(tmp_path, config)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def round_trip(tmp: pathlib.Path, url: str, **security: object) -> None:
    """central and ship1 with the same security settings; a shellCommand runs on ship1."""
    with steward.Node("central", [url], data_dir=tmp / "central", **FAST, **OPEN, **security) as central:  # type: ignore[arg-type]
        with steward.Node("ship1", [url], data_dir=tmp / "ship1", **FAST, **OPEN, **security):  # type: ignore[arg-type]
            receipt = central.send(to="ship1", method="shellCommand", data=["bash", "-c", "echo secure from $0"])
            result = receipt.result(timeout=30)
            assert result.status == "ok"
            assert result.stdout == "secure from bash\n"


def refused(tmp: pathlib.Path, url: str, *expect: str, **security: object) -> str:
    """start() must raise BrokerAuthError at once, its message containing each of `expect`;
    a message waiting in the node's inmsg.txt stays there (nothing ran)."""
    data = tmp / "refused"
    data.mkdir(exist_ok=True)
    waiting = '[{"toNode":"central","method":"echo","commandOrEvent":"command","data":["x"]}]'
    (data / "inmsg.txt").write_text(waiting)
    node = steward.Node("ship2", [url], data_dir=data, watch_inmsg=True, **security)  # type: ignore[arg-type]
    started = time.monotonic()
    with pytest.raises(steward.BrokerAuthError) as info:
        node.start()
    assert time.monotonic() - started < 5, "a refusal must not wait for a retry loop"
    text = str(info.value)
    for e in expect:
        assert e in text, text
    assert info.value.kind == "broker_auth"
    # Code that catches BrokerUnavailable catches it too.
    assert isinstance(info.value, steward.BrokerUnavailable)
    assert (data / "inmsg.txt").read_text() == waiting
    node.stop()
    return text


def test_user_and_password(tmp_path: pathlib.Path, server_with) -> None:  # type: ignore[no-untyped-def]
    server = server_with('authorization { users = [ { user: "steward", password: "py s3cret" } ] }')
    round_trip(tmp_path, server.url, broker_user="steward", broker_password="py s3cret")
    text = refused(
        tmp_path, server.url, '"steward"', "not accepted", broker_user="steward", broker_password="wrong-one"
    )
    assert "wrong-one" not in text
    refused(tmp_path, server.url, "requires authentication and none was given")


def test_token(tmp_path: pathlib.Path, server_with) -> None:  # type: ignore[no-untyped-def]
    server = server_with('authorization { token: "py-t0ken" }')
    round_trip(tmp_path, server.url, broker_token="py-t0ken")
    text = refused(tmp_path, server.url, "token was not accepted", broker_token="py-other")
    assert "py-other" not in text


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture
def pki(tmp_path: pathlib.Path) -> dict[str, pathlib.Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make the test certificates")
    d = tmp_path / "pki"
    d.mkdir()
    p = {n: d / f"{n}.pem" for n in ["ca", "ca-key", "server", "server-key", "client", "client-key"]}
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
            "-subj", "/CN=steward py test CA", "-keyout", str(p["ca-key"]), "-out", str(p["ca"]))
    for name, ext in [
        ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth"),
        ("client", "extendedKeyUsage=clientAuth"),
    ]:
        csr = d / f"{name}.csr"
        extfile = d / f"{name}.ext"
        extfile.write_text(ext + "\n")
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", f"/CN={name}",
                "-keyout", str(p[f"{name}-key"]), "-out", str(csr))
        openssl("x509", "-req", "-in", str(csr), "-CA", str(p["ca"]), "-CAkey", str(p["ca-key"]),
                "-CAcreateserial", "-days", "1", "-extfile", str(extfile), "-out", str(p[name]))
    return p


def tls_config(pki: dict[str, pathlib.Path], verify: bool) -> str:
    return (
        "tls {\n"
        f"  cert_file: {json.dumps(str(pki['server']))}\n"
        f"  key_file: {json.dumps(str(pki['server-key']))}\n"
        f"  ca_file: {json.dumps(str(pki['ca']))}\n"
        f"  verify: {'true' if verify else 'false'}\n"
        "}"
    )


def test_tls_with_a_ca_bundle(tmp_path: pathlib.Path, server_with, pki) -> None:  # type: ignore[no-untyped-def]
    server = server_with(tls_config(pki, verify=False))
    round_trip(tmp_path, server.url, broker_tls_ca=pki["ca"])
    refused(tmp_path, server.url, "certificate is not trusted")


def test_mutual_tls(tmp_path: pathlib.Path, server_with, pki) -> None:  # type: ignore[no-untyped-def]
    server = server_with(tls_config(pki, verify=True))
    round_trip(
        tmp_path,
        server.url,
        broker_tls_ca=str(pki["ca"]),
        broker_tls_cert=pki["client"],
        broker_tls_key=pki["client-key"],
    )
    refused(tmp_path, server.url, "requires a client certificate", broker_tls_ca=pki["ca"])


def test_bad_security_options_are_config_errors(tmp_path: pathlib.Path) -> None:
    url = "nats://127.0.0.1:1"
    with pytest.raises(steward.ConfigError, match="give broker_user and broker_password together"):
        steward.Node("n", [url], data_dir=tmp_path / "n", broker_user="u")
    with pytest.raises(steward.ConfigError, match="not broker_user and broker_token"):
        steward.Node("n", [url], data_dir=tmp_path / "n", broker_user="u", broker_password="p", broker_token="t")
    with pytest.raises(steward.ConfigError, match="broker_tls_ca"):
        steward.Node("n", [url], data_dir=tmp_path / "n", broker_tls_ca=42)  # type: ignore[arg-type]
    with pytest.raises(steward.ConfigError, match="give broker_tls_cert and broker_tls_key together"):
        steward.Node("n", [url], data_dir=tmp_path / "n", broker_tls_cert="c.pem")
    # A wrong type never shows the value given.
    with pytest.raises(steward.ConfigError) as info:
        steward.Node("n", [url], data_dir=tmp_path / "n", broker_token=b"secret-bytes")  # type: ignore[arg-type]
    assert "secret-bytes" not in str(info.value)
    # Unusable files fail start() as configuration errors naming the file.
    node = steward.Node("n", [url], data_dir=tmp_path / "n", broker_creds=tmp_path / "missing.creds")
    with pytest.raises(steward.ConfigError, match="missing.creds"):
        node.start()
    node.stop()
