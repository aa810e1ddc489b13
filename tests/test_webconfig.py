import base64
import socket
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import bcrypt
import pytest
import trustme
import yaml
from cryptography.hazmat.primitives import serialization

from exporter.config import ConfigError
from exporter.webconfig import NO_WEB_CONFIG, BasicAuth, WebConfig, load_web_config

PASSWORD = b"s3cret-password"
HASH = bcrypt.hashpw(PASSWORD, bcrypt.gensalt(rounds=4))  # low cost: fast tests


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def client_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def certs(tmp_path: Path, ca: trustme.CA, client_ca: trustme.CA) -> Path:
    """tmp_path with server.crt and server.key, other.key (another certificate's key) and
    client-ca.crt."""
    server = ca.issue_cert("localhost")
    server.cert_chain_pems[0].write_to_path(tmp_path / "server.crt")
    server.private_key_pem.write_to_path(tmp_path / "server.key")
    ca.issue_cert("other.example").private_key_pem.write_to_path(tmp_path / "other.key")
    client_ca.cert_pem.write_to_path(tmp_path / "client-ca.crt")
    return tmp_path


def write(directory: Path, data: object, name: str = "web.yml") -> Path:
    path = directory / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def tls_config(**overrides: object) -> dict[str, object]:
    tls: dict[str, object] = {"cert_file": "server.crt", "key_file": "server.key"}
    tls.update(overrides)
    return {"tls_server_config": {k: v for k, v in tls.items() if v is not None}}


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_web_config(path)
    assert caught.value.source == str(path)
    return list(caught.value.problems)


def client_context(
    ca: trustme.CA, cert: trustme.LeafCert | None = None, *, tls12_only: bool = False
) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(context)
    if cert is not None:
        cert.configure_cert(context)
    if tls12_only:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context


class Talk(NamedTuple):
    server: object  # the cipher the server negotiated, or its exception
    reply: object  # what the client read, or its exception
    alpn: str | None = None  # the protocol the client was told


def talk(server: ssl.SSLContext | None, client: ssl.SSLContext) -> Talk:
    """One TLS connection over loopback, the server sending b"hello"."""
    assert server is not None
    seen: dict[str, object] = {}
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)

        def serve() -> None:
            connection, _ = listener.accept()
            connection.settimeout(10)
            try:
                with server.wrap_socket(connection, server_side=True) as tls:
                    tls.sendall(b"hello")
                    seen["server"] = tls.cipher()
            except OSError as exc:  # ssl.SSLError is an OSError
                seen["server"] = exc
            finally:
                connection.close()

        thread = threading.Thread(target=serve)
        thread.start()
        alpn = None
        try:
            with (
                socket.create_connection(listener.getsockname(), timeout=10) as raw,
                client.wrap_socket(raw, server_hostname="localhost") as tls,
            ):
                alpn = tls.selected_alpn_protocol()
                reply: object = tls.recv(5)
        except OSError as exc:
            reply = exc
        thread.join(10)
    return Talk(seen["server"], reply, alpn)


# What a valid file gives


@pytest.mark.parametrize(
    "text", ["", "# nothing\n", "{}\n", "tls_server_config:\nbasic_auth_users:\n"]
)
def test_an_empty_file_or_mapping_enables_nothing(tmp_path: Path, text: str) -> None:
    config = load_web_config(write(tmp_path, text))
    assert config.path == str(tmp_path / "web.yml")
    assert not config.tls_enabled
    assert config.tls_context is None
    assert dict(config.users) == {}
    assert dict(config.headers) == {}


def test_no_web_config_enables_nothing() -> None:
    assert WebConfig() == NO_WEB_CONFIG
    assert NO_WEB_CONFIG.path is None
    assert not NO_WEB_CONFIG.tls_enabled
    assert not NO_WEB_CONFIG.users
    assert not NO_WEB_CONFIG.headers


def test_a_tls_config_serves_a_real_handshake(certs: Path, ca: trustme.CA) -> None:
    config = load_web_config(write(certs, tls_config()))
    assert config.tls_enabled
    assert config.tls_context is not None
    assert config.tls_context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert config.tls_context.verify_mode == ssl.CERT_NONE
    result = talk(config.tls_context, client_context(ca))
    assert result.reply == b"hello"
    assert isinstance(result.server, tuple)


def test_only_http_1_1_is_offered_whatever_http2_says(certs: Path, ca: trustme.CA) -> None:
    config = load_web_config(write(certs, {**tls_config(), "http_server_config": {"http2": True}}))
    client = client_context(ca)
    client.set_alpn_protocols(["h2", "http/1.1"])
    assert talk(config.tls_context, client).alpn == "http/1.1"


def test_relative_paths_are_read_from_the_config_files_directory(
    tmp_path: Path, ca: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "etc" / "certs").mkdir(parents=True)
    server = ca.issue_cert("localhost")
    server.cert_chain_pems[0].write_to_path(tmp_path / "etc" / "certs" / "server.crt")
    server.private_key_pem.write_to_path(tmp_path / "etc" / "certs" / "server.key")
    write(
        tmp_path / "etc",
        {"tls_server_config": {"cert_file": "certs/server.crt", "key_file": "certs/server.key"}},
    )
    monkeypatch.chdir(tmp_path)
    assert load_web_config("etc/web.yml").tls_enabled
    monkeypatch.chdir(tmp_path / "etc" / "certs")  # nothing relative to the working directory
    assert load_web_config(tmp_path / "etc" / "web.yml").tls_enabled


def test_absolute_paths_are_kept(certs: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    data = tls_config(cert_file=str(certs / "server.crt"), key_file=str(certs / "server.key"))
    assert load_web_config(write(elsewhere, data)).tls_enabled


def test_min_version_tls13_refuses_a_tls12_only_client(certs: Path, ca: trustme.CA) -> None:
    config = load_web_config(write(certs, tls_config(min_version="TLS13")))
    result = talk(config.tls_context, client_context(ca, tls12_only=True))
    assert isinstance(result.reply, ssl.SSLError)
    assert isinstance(result.server, ssl.SSLError)
    assert talk(config.tls_context, client_context(ca)).reply == b"hello"


def test_cipher_suites_pick_the_tls12_suite(certs: Path, ca: trustme.CA) -> None:
    # Not the suite OpenSSL would pick by itself; the TLS 1.3 name has no effect, as in Go.
    suites = ["TLS_AES_128_GCM_SHA256", "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"]
    data = tls_config(cipher_suites=suites, max_version="TLS12")
    config = load_web_config(write(certs, data))
    result = talk(config.tls_context, client_context(ca, tls12_only=True))
    assert result.reply == b"hello"
    assert isinstance(result.server, tuple)
    assert result.server[0] == "ECDHE-ECDSA-CHACHA20-POLY1305"


def test_prefer_server_cipher_suites_false_is_honoured(certs: Path) -> None:
    config = load_web_config(write(certs, tls_config(prefer_server_cipher_suites=False)))
    assert config.tls_context is not None
    assert not config.tls_context.options & ssl.OP_CIPHER_SERVER_PREFERENCE


def test_require_and_verify_client_cert(certs: Path, ca: trustme.CA, client_ca: trustme.CA) -> None:
    data = tls_config(client_auth_type="RequireAndVerifyClientCert", client_ca_file="client-ca.crt")
    config = load_web_config(write(certs, data))
    assert config.tls_context is not None
    assert config.tls_context.verify_mode == ssl.CERT_REQUIRED

    without = talk(config.tls_context, client_context(ca))
    assert isinstance(without.server, ssl.SSLError)
    assert isinstance(without.reply, OSError) or without.reply == b""

    signed = talk(config.tls_context, client_context(ca, client_ca.issue_cert("scraper")))
    assert signed.reply == b"hello"

    stranger = talk(config.tls_context, client_context(ca, ca.issue_cert("stranger")))
    assert isinstance(stranger.server, ssl.SSLError)


def test_verify_client_cert_if_given_admits_a_client_without_one(
    certs: Path, ca: trustme.CA, client_ca: trustme.CA
) -> None:
    pem = (certs / "client-ca.crt").read_text()
    config = load_web_config(
        write(certs, tls_config(client_auth_type="VerifyClientCertIfGiven", client_ca=pem))
    )
    assert config.tls_context is not None
    assert config.tls_context.verify_mode == ssl.CERT_OPTIONAL
    assert talk(config.tls_context, client_context(ca)).reply == b"hello"
    stranger = talk(config.tls_context, client_context(ca, ca.issue_cert("stranger")))
    assert isinstance(stranger.server, ssl.SSLError)


def test_allowed_headers_are_kept_and_blank_ones_dropped(tmp_path: Path) -> None:
    text = """\
http_server_config:
  http2: false
  headers:
    X-Frame-Options: deny
    Strict-Transport-Security: max-age=31536000; includeSubDomains
    X-Content-Type-Options: nosniff
    X-XSS-Protection: 1
    Content-Security-Policy: ""
"""
    assert dict(load_web_config(write(tmp_path, text)).headers) == {
        "X-Frame-Options": "deny",
        "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
        "X-Content-Type-Options": "nosniff",
        "X-XSS-Protection": "1",
    }


def test_users_are_kept_as_hash_bytes_and_not_shown(tmp_path: Path) -> None:
    config = load_web_config(write(tmp_path, {"basic_auth_users": {"alice": HASH.decode()}}))
    assert dict(config.users) == {"alice": HASH}
    assert HASH.decode() not in repr(config)


# What an invalid file gives: every problem, each with its key path


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    data = {
        "tls_server_config": {"cert_file": "server.crt", "min_version": "TLS9"},
        "basic_auth_users": {"alice": "plain-password"},
        "http_server_config": {"headers": {"X-Powered-By": "me"}},
        "rate_limit": {"interval": "1s", "burst": 20},
    }
    found = problems(write(tmp_path, data))
    assert found == [
        "tls_server_config.key_file: required key is missing",
        "tls_server_config.min_version: unknown TLS version 'TLS9'; use TLS12 or TLS13",
        "http_server_config.headers.X-Powered-By: this header cannot be set; allowed: "
        "Content-Security-Policy, X-Frame-Options, X-Content-Type-Options, X-XSS-Protection, "
        "Strict-Transport-Security",
        "basic_auth_users.alice: not a bcrypt hash ($2a$, $2b$ or $2y$, a cost of 04 to 31, "
        "53 more characters); make one with: htpasswd -nBC 10 \"\" | tr -d ':\\n'",
        "rate_limit: not supported by braze-exporter: put a rate-limiting reverse proxy in front",
    ]
    assert not any("plain-password" in p for p in found)


def test_a_cert_and_key_that_do_not_belong_together(certs: Path) -> None:
    found = problems(write(certs, tls_config(key_file="other.key")))
    assert found == [
        f"tls_server_config.key_file: {certs / 'other.key'} does not match "
        f"tls_server_config.cert_file {certs / 'server.crt'}"
    ]


def test_missing_files_are_named_by_key(certs: Path) -> None:
    data = tls_config(
        cert_file="{braces}/missing.crt",  # a path is not a message template
        key_file="missing.key",
        client_auth_type="RequireAndVerifyClientCert",
        client_ca_file="missing-ca.crt",
    )
    found = problems(write(certs, data))
    assert found == [
        f"tls_server_config.cert_file: cannot read {certs / '{braces}/missing.crt'}: "
        "No such file or directory",
        f"tls_server_config.key_file: cannot read {certs / 'missing.key'}: "
        "No such file or directory",
        f"tls_server_config.client_ca_file: cannot read {certs / 'missing-ca.crt'}: "
        "No such file or directory",
    ]


def test_files_that_are_not_pem(certs: Path) -> None:
    (certs / "junk").write_text("not PEM at all\n")
    assert problems(write(certs, tls_config(cert_file="junk"))) == [
        f"tls_server_config.cert_file: {certs / 'junk'} holds no PEM certificate"
    ]
    assert problems(write(certs, tls_config(key_file="junk"))) == [
        f"tls_server_config.key_file: {certs / 'junk'} holds no PEM private key"
    ]
    assert problems(write(certs, tls_config(key_file="server.crt"))) == [
        f"tls_server_config.key_file: {certs / 'server.crt'} holds no PEM private key"
    ]
    data = tls_config(client_auth_type="RequireAndVerifyClientCert", client_ca_file="junk")
    assert problems(write(certs, data)) == [
        f"tls_server_config.client_ca_file: {certs / 'junk'} holds no PEM certificate"
    ]


def test_an_encrypted_key_is_refused_without_a_prompt(certs: Path) -> None:
    key = serialization.load_pem_private_key((certs / "server.key").read_bytes(), None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )
    (certs / "encrypted.key").write_bytes(encrypted)
    assert problems(write(certs, tls_config(key_file="encrypted.key"))) == [
        f"tls_server_config.key_file: {certs / 'encrypted.key'} holds an encrypted key; "
        "give it unencrypted"
    ]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            tls_config(client_ca_fil="ca.crt"),
            "tls_server_config.client_ca_fil: unknown key (did you mean 'client_ca_file'?)",
        ),
        (
            {"basic_auth_user": {}},
            "basic_auth_user: unknown key (did you mean 'basic_auth_users'?)",
        ),
        (
            {"http_server_config": {"header": {}}},
            "http_server_config.header: unknown key (did you mean 'headers'?)",
        ),
        ({"tls": {}}, "tls: unknown key"),
    ],
)
def test_an_unknown_key_is_named_with_a_hint(tmp_path: Path, data: object, expected: str) -> None:
    assert problems(write(tmp_path, data)) == [expected]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (
            {"X-Frame-Option": "deny"},
            "http_server_config.headers.X-Frame-Option: this header cannot be set "
            "(did you mean 'X-Frame-Options'?); allowed: ",
        ),
        (
            {"X-Frame-Options": "allow"},
            "http_server_config.headers.X-Frame-Options: Input should be 'deny' or 'sameorigin'",
        ),
        (
            {"X-Content-Type-Options": "sniff"},
            "http_server_config.headers.X-Content-Type-Options: Input should be 'nosniff'",
        ),
        (
            {"Content-Security-Policy": "a\r\nSet-Cookie: x=1"},
            "http_server_config.headers.Content-Security-Policy: must be printable ASCII",
        ),
        (
            {"X-XSS-Protection": True},
            "http_server_config.headers.X-XSS-Protection: Input should be a valid string",
        ),
    ],
)
def test_headers_follow_the_toolkits_rules(
    tmp_path: Path, headers: dict[str, object], expected: str
) -> None:
    found = problems(write(tmp_path, {"http_server_config": {"headers": headers}}))
    assert len(found) == 1
    assert found[0].startswith(expected)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"client_auth_type": "RequestClientCert"}, "client_auth_type"),
        ({"client_auth_type": "RequireAnyClientCert"}, "client_auth_type"),
        ({"client_auth_type": "RequireClientCert"}, "client_auth_type"),
        ({"min_version": "TLS10"}, "min_version"),
        ({"max_version": "TLS11"}, "max_version"),
        ({"curve_preferences": ["X25519"]}, "curve_preferences"),
        ({"client_allowed_sans": ["scraper.example"]}, "client_allowed_sans"),
        ({"cert": "-----BEGIN CERTIFICATE-----\n"}, "cert"),
        ({"key": "-----BEGIN PRIVATE KEY-----\nSECRET-KEY-MATERIAL\n"}, "key"),
    ],
)
def test_what_python_cannot_do_is_refused_by_name(
    certs: Path, overrides: dict[str, object], key: str
) -> None:
    found = problems(write(certs, tls_config(**overrides)))
    assert len(found) == 1
    assert found[0].startswith(f"tls_server_config.{key}: ")
    assert "not supported by braze-exporter" in found[0]
    assert "SECRET-KEY-MATERIAL" not in found[0]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"client_auth_type": "RequireAndVerifyClientCert"},
            "tls_server_config.client_ca_file: required with client_auth_type "
            "RequireAndVerifyClientCert",
        ),
        (
            {"client_ca_file": "client-ca.crt"},
            "tls_server_config.client_auth_type: is NoClientCert, so the client CA would go "
            "unused: set RequireAndVerifyClientCert (or VerifyClientCertIfGiven), or remove the "
            "client CA",
        ),
        (
            {"min_version": "TLS13", "max_version": "TLS12"},
            "tls_server_config.min_version: TLS13 is above max_version TLS12",
        ),
        (
            {"client_auth_type": "Always"},
            "tls_server_config.client_auth_type: unknown client auth type 'Always'; use one of "
            "NoClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert",
        ),
        (
            {"cipher_suites": ["TLS_AES_128_GCM_SHA256"]},
            "tls_server_config.cipher_suites: lists only TLS 1.3 suites, which cannot be "
            "configured; list TLS 1.2 suites",
        ),
        ({"cert_file": ""}, "tls_server_config.cert_file: String should have at least 1 character"),
        (
            {"prefer_server_cipher_suites": "yes"},
            "tls_server_config.prefer_server_cipher_suites: Input should be a valid boolean",
        ),
        (
            {"cipher_suites": "TLS_AES_128_GCM_SHA256"},
            "tls_server_config.cipher_suites: must be a list",
        ),
    ],
)
def test_rules_between_keys(certs: Path, overrides: dict[str, object], expected: str) -> None:
    assert problems(write(certs, tls_config(**overrides))) == [expected]


def test_an_unknown_cipher_suite_is_named(certs: Path) -> None:
    found = problems(write(certs, tls_config(cipher_suites=["TLS_RSA_WITH_RC4_128_SHA"])))
    assert found[0].startswith(
        "tls_server_config.cipher_suites: unknown cipher suite 'TLS_RSA_WITH_RC4_128_SHA'; use "
        "one of TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, "
    )


@pytest.mark.parametrize(
    "bad_hash",
    [
        "plain-password",
        HASH.decode()[:-1],  # one character short
        "$2x$" + HASH.decode()[4:],  # not a variant the toolkit reads
        "$2b$03$" + HASH.decode()[7:],  # cost below 4
        "$2b$04$" + "!" * 53,
    ],
)
def test_an_invalid_hash_is_named_by_user_and_never_shown(tmp_path: Path, bad_hash: str) -> None:
    valid = bcrypt.hashpw(b"other", bcrypt.gensalt(rounds=4)).decode()
    data = {"basic_auth_users": {"alice": bad_hash, "bob": valid}, "tls": 1}
    with pytest.raises(ConfigError) as caught:
        load_web_config(write(tmp_path, data))
    assert caught.value.problems[0].startswith("basic_auth_users.alice: not a bcrypt hash")
    assert bad_hash not in str(caught.value)
    assert valid not in str(caught.value)


@pytest.mark.parametrize(
    ("users", "expected"),
    [
        ({"a:b": HASH.decode()}, "basic_auth_users['a:b']: a user name cannot hold ':'"),
        ({"alice": 12}, "basic_auth_users.alice: Input should be a valid string"),
        ([], "basic_auth_users: must be a mapping of keys to values"),
    ],
)
def test_basic_auth_users_shape(tmp_path: Path, users: object, expected: str) -> None:
    found = problems(write(tmp_path, {"basic_auth_users": users}))
    assert len(found) == 1
    assert found[0].startswith(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("basic_auth_users: {}\nbasic_auth_users: {}\n", "basic_auth_users: key given twice"),
        ("- a list\n", "(top level): must be a mapping of keys to values"),
        ("tls_server_config: [1]\n", "tls_server_config: must be a mapping of keys to values"),
    ],
)
def test_the_document_itself(tmp_path: Path, text: str, expected: str) -> None:
    found = problems(write(tmp_path, text))
    assert len(found) == 1
    assert found[0].startswith(expected)


def test_an_unreadable_file(tmp_path: Path) -> None:
    assert problems(tmp_path / "missing.yml") == [
        "cannot read the web config file: No such file or directory"
    ]
    assert problems(tmp_path) == [
        "cannot read the web config file: not a regular file (a directory)"
    ]


# Basic auth


def header(user: str, password: bytes) -> str:
    return "Basic " + base64.b64encode(user.encode() + b":" + password).decode()


class CountingCheck:
    """bcrypt.checkpw, counting its calls and the hashes it was given."""

    def __init__(self) -> None:
        self.hashes: list[bytes] = []

    def __call__(self, password: bytes, hashed: bytes) -> bool:
        self.hashes.append(hashed)
        return bcrypt.checkpw(password, hashed)


def test_no_users_allows_everything() -> None:
    auth = BasicAuth({})
    assert auth.allows(None)
    assert auth.allows("Basic !!!")


def test_the_right_password_passes_and_others_do_not() -> None:
    auth = BasicAuth({"alice": HASH})
    assert auth.allows(header("alice", PASSWORD))
    assert auth.allows("basic " + header("alice", PASSWORD).split()[1])  # scheme in any case
    assert not auth.allows(header("alice", b"wrong"))
    assert not auth.allows(header("alice", PASSWORD + b"x"))
    assert not auth.allows(header("bob", PASSWORD))
    assert not auth.allows(header("alice", b"x" * 100))  # bcrypt refuses over 72 bytes


def test_an_unknown_user_costs_a_bcrypt_check_of_the_same_cost() -> None:
    check = CountingCheck()
    costly = bcrypt.hashpw(PASSWORD, bcrypt.gensalt(rounds=5))
    auth = BasicAuth({"alice": HASH, "carol": costly}, checkpw=check)
    assert not auth.allows(header("mallory", PASSWORD))
    assert len(check.hashes) == 1
    assert check.hashes[0] not in (HASH, costly)
    assert check.hashes[0].startswith(b"$2b$05$")  # as costly as the costliest user's


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "Basic",
        "Basic ",
        "Bearer " + base64.b64encode(b"alice:" + PASSWORD).decode(),
        "Basic not base64!",
        "Basic YWxpY2U",  # padding missing
        "Basic " + base64.b64encode(b"alice").decode(),  # no colon
        "Basic " + base64.b64encode(b"\xff\xfe:" + PASSWORD).decode(),  # not UTF-8
        "Basic é",
        "Basic " + "A" * 10_000,
    ],
)
def test_malformed_headers_are_refused_without_an_exception(value: str | None) -> None:
    check = CountingCheck()
    assert not BasicAuth({"alice": HASH}, checkpw=check).allows(value)
    assert check.hashes == []


def test_a_successful_check_is_cached_and_failures_are_not() -> None:
    check = CountingCheck()
    auth = BasicAuth({"alice": HASH}, checkpw=check)
    for _ in range(3):
        assert auth.allows(header("alice", PASSWORD))
        assert not auth.allows(header("alice", b"wrong"))
    assert check.hashes.count(HASH) == 4  # one success, three failures


def test_the_cache_is_bounded() -> None:
    check = CountingCheck()
    users = {name: bcrypt.hashpw(name.encode(), bcrypt.gensalt(rounds=4)) for name in "abc"}
    auth = BasicAuth(users, checkpw=check, cache_size=2)
    for name in "abca":  # "a" was evicted by "c"
        assert auth.allows(header(name, name.encode()))
    assert len(check.hashes) == 4
    assert auth.allows(header("c", b"c"))
    assert len(check.hashes) == 4


def test_concurrent_checks_agree() -> None:
    auth = BasicAuth({"alice": HASH})
    values = [header("alice", PASSWORD), header("alice", b"wrong")] * 20
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(auth.allows, values))
    assert results == [True, False] * 20
