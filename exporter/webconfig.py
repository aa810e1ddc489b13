"""The web configuration file (``--web.config.file``): TLS, basic auth and response headers.

The format is the Prometheus exporter-toolkit's (docs/web-configuration.md), so that a file
written for any Go exporter works here too. It is validated whole at start-up like the main
config: every problem at once, each with its key path, no message holding a hash or a key.
The TLS context is built at load time, so that a missing file, a file that is not PEM, or a
key that belongs to another certificate is a config error rather than a failed handshake.
Relative paths are read from the web config file's directory, as the toolkit does.

What each key does here, where Python's ssl module and Go's crypto/tls differ:

- ``cert_file``, ``key_file``: required once ``tls_server_config`` is given (given a section
  without files, the toolkit silently serves plain HTTP). Read when the file is loaded, not on
  every handshake as in the toolkit: a renewed certificate is served once the web config is
  loaded again. An encrypted key is refused, as Go refuses it.
- ``cert``, ``key`` (inline PEM): refused. Python loads certificates and keys only from
  files, and writing a key to a temporary file would put it on disk (and fails on a
  read-only root file system). ``client_ca`` (inline) is honoured: CAs load from memory.
- ``client_auth_type``: NoClientCert (the default), VerifyClientCertIfGiven (CERT_OPTIONAL)
  and RequireAndVerifyClientCert (CERT_REQUIRED) are honoured; the Verify types need
  ``client_ca_file`` or ``client_ca``. RequestClientCert and RequireAnyClientCert (also
  spelled RequireClientCert) are refused: Python cannot ask for a certificate without
  verifying it. As in the toolkit, a client CA with NoClientCert is an error.
- ``min_version``, ``max_version``: TLS12 (default minimum) and TLS13 (default maximum).
  TLS10 and TLS11 are refused: deprecated by RFC 8996 and by Python's ssl module.
- ``cipher_suites``: honoured for Go's TLS 1.2 suites (tls.CipherSuites()), mapped to
  OpenSSL's names. TLS 1.3 suite names are accepted and have no effect, as in Go; a list
  of only those is refused.
- ``prefer_server_cipher_suites``: honoured (OpenSSL's OP_CIPHER_SERVER_PREFERENCE).
- ``curve_preferences``, ``client_allowed_sans``: refused when not empty; Python's ssl module
  cannot set a list of curves, nor check a client certificate's SANs during the handshake.
- ``http_server_config.headers``: the toolkit's five headers, with its allowed values; any
  other header is refused. A blank value sends no header, except that X-Frame-Options and
  X-Content-Type-Options take only their allowed values, as in the toolkit.
- ``http_server_config.http2``: accepted and without effect: braze-exporter speaks HTTP/1.1
  only and announces just that through ALPN, so clients (Prometheus included) use HTTP/1.1.
- ``basic_auth_users``: user name -> bcrypt hash ($2a$, $2b$ or $2y$); a user name holding
  ':' is refused, since basic auth could never carry it.
- ``rate_limit``: refused; put a rate-limiting reverse proxy in front if you need one.
"""

from __future__ import annotations

import base64
import difflib
import functools
import hashlib
import re
import secrets
import ssl
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal

import bcrypt
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    StrictStr,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from exporter.config import ConfigError, read_document
from exporter.config_yaml import FileProblem, key_path, read_regular_file

__all__ = ["NO_WEB_CONFIG", "BasicAuth", "WebConfig", "load_web_config"]

WEB_CONFIG_FILE_LIMIT = 1024**2  # bytes
PEM_FILE_LIMIT = 1024**2  # a certificate chain or a CA bundle
CACHE_SIZE = 100  # successful basic auth checks remembered, as in the toolkit

_TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_UNVERIFIED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert", "RequireClientCert")
# Go's TLS 1.2 suites (crypto/tls CipherSuites()) by their OpenSSL names.
_TLS12_SUITES = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
}
_TLS13_SUITES = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256")
_BCRYPT_HASH = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
_NOT_SUPPORTED = "not supported by braze-exporter"


def _bcrypt_hash(text: str) -> str:
    if not _BCRYPT_HASH.fullmatch(text):  # the message must not repeat the text: a hash
        raise ValueError(
            "not a bcrypt hash ($2a$, $2b$ or $2y$, a cost of 04 to 31, 53 more characters); "
            "make one with: htpasswd -nBC 10 \"\" | tr -d ':\\n'"
        )
    return text


def _user_name(name: str) -> str:
    if ":" in name:
        raise ValueError("a user name cannot hold ':' (basic auth ends the name at the first one)")
    return name


def _int_as_text(value: object) -> object:
    """YAML reads ``X-XSS-Protection: 1`` as a number; Go's loader takes it as text."""
    return str(value) if type(value) is int else value


def _header_value(text: str) -> str:
    if not all(" " <= char <= "~" for char in text):
        raise ValueError("must be printable ASCII on one line")
    return text


FileName = Annotated[StrictStr, StringConstraints(min_length=1)]
UserName = Annotated[str, AfterValidator(_user_name)]
BcryptHash = Annotated[StrictStr, AfterValidator(_bcrypt_hash)]
HeaderValue = Annotated[StrictStr, BeforeValidator(_int_as_text), AfterValidator(_header_value)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _TLSServerConfig(_Model):
    cert_file: FileName
    key_file: FileName
    cert: object = None
    key: object = None
    client_auth_type: StrictStr = "NoClientCert"
    client_ca_file: FileName | None = None
    client_ca: StrictStr | None = None
    min_version: StrictStr = "TLS12"
    max_version: StrictStr = "TLS13"
    cipher_suites: tuple[StrictStr, ...] | None = None
    prefer_server_cipher_suites: StrictBool = True
    curve_preferences: tuple[StrictStr, ...] | None = None
    client_allowed_sans: tuple[StrictStr, ...] | None = None
    _context: ssl.SSLContext | None = PrivateAttr(default=None)

    @field_validator("cert", "key")
    @classmethod
    def _no_inline_pem(cls, value: object, info: ValidationInfo) -> None:
        if value is not None:
            raise ValueError(
                f"inline PEM is {_NOT_SUPPORTED} (Python's ssl module loads certificates and "
                f"keys only from files): put it in a file and set {info.field_name}_file"
            )

    @field_validator("client_auth_type")
    @classmethod
    def _known_client_auth(cls, name: str) -> str:
        if name in _UNVERIFIED_CLIENT_AUTH:
            raise ValueError(
                f"{name} is {_NOT_SUPPORTED}: Python's ssl module cannot ask for a client "
                "certificate without verifying it; use RequireAndVerifyClientCert or "
                "VerifyClientCertIfGiven with client_ca_file"
            )
        if name not in _CLIENT_AUTH:
            raise ValueError(
                f"unknown client auth type {name!r}; use one of {_names(_CLIENT_AUTH)}"
            )
        return name

    @field_validator("min_version", "max_version")
    @classmethod
    def _known_version(cls, name: str) -> str:
        if name in ("TLS10", "TLS11"):
            raise ValueError(f"{name} is {_NOT_SUPPORTED} (deprecated by RFC 8996); use TLS12")
        if name not in _TLS_VERSIONS:
            raise ValueError(f"unknown TLS version {name!r}; use TLS12 or TLS13")
        return name

    @field_validator("cipher_suites")
    @classmethod
    def _known_suites(cls, names: tuple[str, ...] | None) -> tuple[str, ...] | None:
        unknown = [n for n in names or () if n not in _TLS12_SUITES and n not in _TLS13_SUITES]
        if unknown:
            raise ValueError(
                f"unknown cipher suite {unknown[0]!r}; use one of {_names(_TLS12_SUITES)}"
            )
        if names and all(n in _TLS13_SUITES for n in names):
            raise ValueError(
                "lists only TLS 1.3 suites, which cannot be configured; list TLS 1.2 suites"
            )
        return names

    @field_validator("curve_preferences", "client_allowed_sans")
    @classmethod
    def _unsupported_list(cls, names: tuple[str, ...] | None, info: ValidationInfo) -> None:
        if names:
            why = {
                "curve_preferences": "Python's ssl module cannot set a list of curves",
                "client_allowed_sans": "Python's ssl module cannot check a client certificate's "
                "SANs during the handshake; give such clients a CA of their own",
            }[str(info.field_name)]
            raise ValueError(f"{_NOT_SUPPORTED}: {why}")

    @model_validator(mode="after")
    def _build_context(self, info: ValidationInfo) -> _TLSServerConfig:
        base_dir = Path((info.context or {}).get("base_dir", "."))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        problems = [*_policy_problems(self), *_configure(context, self, base_dir)]
        if problems:
            raise ValidationError.from_exception_data(type(self).__name__, problems)
        self._context = context
        return self


class _Headers(_Model):
    content_security_policy: HeaderValue | None = Field(None, alias="Content-Security-Policy")
    x_frame_options: Literal["deny", "sameorigin"] | None = Field(None, alias="X-Frame-Options")
    x_content_type_options: Literal["nosniff"] | None = Field(None, alias="X-Content-Type-Options")
    x_xss_protection: HeaderValue | None = Field(None, alias="X-XSS-Protection")
    strict_transport_security: HeaderValue | None = Field(None, alias="Strict-Transport-Security")


class _HTTPServerConfig(_Model):
    http2: StrictBool = True  # no effect: see the module's docstring
    headers: _Headers | None = None


class _WebConfigFile(_Model):
    tls_server_config: _TLSServerConfig | None = None
    http_server_config: _HTTPServerConfig | None = None
    basic_auth_users: dict[UserName, BcryptHash] | None = None
    rate_limit: object = None

    @field_validator("rate_limit")
    @classmethod
    def _no_rate_limit(cls, value: object) -> None:
        if value is not None:
            raise ValueError(f"{_NOT_SUPPORTED}: put a rate-limiting reverse proxy in front")


def _policy_problems(tls: _TLSServerConfig) -> list[InitErrorDetails]:
    """The rules between keys, checked before any file is read."""
    problems = []
    has_ca = tls.client_ca_file is not None or tls.client_ca is not None
    if tls.client_ca_file is not None and tls.client_ca is not None:
        problems.append(_problem("client_ca", "set only one of client_ca or client_ca_file"))
    if _CLIENT_AUTH[tls.client_auth_type] != ssl.CERT_NONE and not has_ca:
        message = f"required with client_auth_type {tls.client_auth_type}"
        problems.append(_problem("client_ca_file", message))
    if _CLIENT_AUTH[tls.client_auth_type] == ssl.CERT_NONE and has_ca:
        message = (
            "is NoClientCert, so the client CA would go unused: set RequireAndVerifyClientCert "
            "(or VerifyClientCertIfGiven), or remove the client CA"
        )
        problems.append(_problem("client_auth_type", message))
    if _TLS_VERSIONS[tls.min_version] > _TLS_VERSIONS[tls.max_version]:
        message = f"{tls.min_version} is above max_version {tls.max_version}"
        problems.append(_problem("min_version", message))
    return problems


def _configure(
    context: ssl.SSLContext, tls: _TLSServerConfig, base_dir: Path
) -> list[InitErrorDetails]:
    """Set up `context` from `tls`; the problems found on the way."""
    context.minimum_version = _TLS_VERSIONS[tls.min_version]
    context.maximum_version = _TLS_VERSIONS[tls.max_version]
    context.set_alpn_protocols(["http/1.1"])
    if tls.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    problems = []
    suites = [_TLS12_SUITES[n] for n in tls.cipher_suites or () if n in _TLS12_SUITES]
    if suites:
        try:
            context.set_ciphers(":".join(suites))
        except ssl.SSLError:
            problems.append(_problem("cipher_suites", "none of these suites is available here"))
    problems += _load_key_pair(context, base_dir / tls.cert_file, base_dir / tls.key_file)
    context.verify_mode = _CLIENT_AUTH[tls.client_auth_type]
    if tls.client_ca_file is not None:
        path = base_dir / tls.client_ca_file
        try:
            problems += _load_client_ca(context, "client_ca_file", _read_pem(path), str(path))
        except FileProblem as exc:
            problems.append(_problem("client_ca_file", f"cannot read {path}: {exc}"))
    elif tls.client_ca is not None:
        problems += _load_client_ca(context, "client_ca", tls.client_ca, "it")
    return problems


class _EncryptedKeyError(Exception):
    pass


def _refuse_password() -> str:
    """Called by OpenSSL for an encrypted key, instead of prompting on the terminal."""
    raise _EncryptedKeyError


def _load_key_pair(context: ssl.SSLContext, cert: Path, key: Path) -> list[InitErrorDetails]:
    texts = {}
    problems = []
    for name, path in (("cert_file", cert), ("key_file", key)):
        try:
            texts[name] = _read_pem(path)
        except FileProblem as exc:
            problems.append(_problem(name, f"cannot read {path}: {exc}"))
    if problems:
        return problems
    try:
        context.load_cert_chain(cert, key, password=_refuse_password)
    except _EncryptedKeyError:
        return [_problem("key_file", f"{key} holds an encrypted key; give it unencrypted")]
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            message = f"{key} does not match tls_server_config.cert_file {cert}"
            return [_problem("key_file", message)]
        if not _load_cas(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), texts["cert_file"]):
            return [_problem("cert_file", f"{cert} holds no PEM certificate")]
        return [_problem("key_file", f"{key} holds no PEM private key")]
    except OSError as exc:  # the file went away since it was read
        return [_problem("cert_file", f"cannot read {cert} or {key}: {exc.strerror}")]
    return []


def _load_client_ca(
    context: ssl.SSLContext, name: str, pem: str, where: str
) -> list[InitErrorDetails]:
    return [] if _load_cas(context, pem) else [_problem(name, f"{where} holds no PEM certificate")]


def _load_cas(context: ssl.SSLContext, pem: str) -> bool:
    """Whether `pem` holds certificates, which `context` now trusts."""
    try:
        context.load_verify_locations(cadata=pem)
    except (ssl.SSLError, ValueError):  # ValueError: nothing in it at all
        return False
    return True


def _read_pem(path: Path) -> str:
    return read_regular_file(path, PEM_FILE_LIMIT).decode("ascii", errors="replace")


def _problem(name: str, message: str) -> InitErrorDetails:
    # The message as a context value, not as the template: a path may hold braces.
    error = PydanticCustomError("web_config", "{message}", {"message": message})
    return InitErrorDetails(type=error, loc=(name,), input=None)


def _names(options: Iterable[str]) -> str:
    return ", ".join(options)


@dataclass(frozen=True)
class WebConfig:
    """What the web config file enables: TLS, basic auth users and extra response headers."""

    path: str | None = None
    tls_context: ssl.SSLContext | None = None
    users: Mapping[str, bytes] = field(default_factory=lambda: MappingProxyType({}), repr=False)
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    tls_files: tuple[Path, ...] = ()  # certificate, key and client CA files, as read

    @property
    def tls_enabled(self) -> bool:
        return self.tls_context is not None


NO_WEB_CONFIG = WebConfig()


def load_web_config(path: str | Path) -> WebConfig:
    """Read and validate a web config file; raise ConfigError listing every problem."""
    source = str(path)
    data = read_document(path, WEB_CONFIG_FILE_LIMIT, "web config file")
    if data is None:
        return WebConfig(path=source)
    try:
        parsed = _WebConfigFile.model_validate(data, context={"base_dir": Path(path).parent})
    except ValidationError as exc:
        problems = [_describe(e) for e in exc.errors(include_input=False)]
        raise ConfigError(source, problems) from None
    tls = parsed.tls_server_config
    base_dir = Path(path).parent
    tls_files: tuple[Path, ...] = ()
    if tls is not None:
        names = (tls.cert_file, tls.key_file, tls.client_ca_file)
        tls_files = tuple(base_dir / name for name in names if name is not None)
    http = parsed.http_server_config or _HTTPServerConfig()
    headers = http.headers.model_dump(by_alias=True) if http.headers else {}
    return WebConfig(
        path=source,
        tls_context=None if tls is None else tls._context,
        users=MappingProxyType({u: h.encode() for u, h in (parsed.basic_auth_users or {}).items()}),
        headers=MappingProxyType({name: value for name, value in headers.items() if value}),
        tls_files=tls_files,
    )


def _describe(error: Mapping[str, Any]) -> str:
    loc = tuple(part for part in error["loc"] if part != "[key]")  # a dict key's own error
    kind = error["type"]
    if kind == "extra_forbidden" and len(loc) > 1 and loc[-2] == "headers":
        message = f"this header cannot be set{_hint(loc[-1], _header_names())}; allowed: " + (
            ", ".join(_header_names())
        )
    elif kind == "extra_forbidden":
        message = "unknown key" + _hint(loc[-1], _key_names())
    elif kind == "missing":
        message = "required key is missing"
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        message = "must be a mapping of keys to values"
    elif kind in ("tuple_type", "list_type"):
        message = "must be a list"
    else:
        message = str(error["msg"]).removeprefix("Value error, ")
    return f"{key_path(loc)}: {message}"


def _hint(name: object, names: list[str]) -> str:
    close = difflib.get_close_matches(str(name), names, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


@functools.cache
def _key_names() -> list[str]:
    models: list[type[BaseModel]] = [_WebConfigFile, _TLSServerConfig, _HTTPServerConfig]
    return sorted({name for model in models for name in model.model_fields})


@functools.cache
def _header_names() -> list[str]:
    return [str(info.alias) for info in _Headers.model_fields.values()]


class BasicAuth:
    """Checks ``Authorization: Basic`` credentials against bcrypt hashes, as the toolkit does.

    A user name that is not configured is checked against a dummy hash of the same cost, so
    that it takes as long as a wrong password. Successful checks are remembered (a bcrypt
    check takes some 100 ms at cost 10, and Prometheus scrapes every few seconds), keyed by a
    SHA-256 of user, password and hash, so that no password is kept; failures are not, so
    that guessing stays slow. Checks run one at a time, as in the toolkit: bcrypt is costly.
    Making one costs a bcrypt hash (the dummy), so make it outside any lock that requests take.
    """

    def __init__(
        self,
        users: Mapping[str, bytes],
        *,
        checkpw: Callable[[bytes, bytes], bool] = bcrypt.checkpw,
        cache_size: int = CACHE_SIZE,
    ) -> None:
        self._users = dict(users)
        self._checkpw = checkpw
        self._cache_size = cache_size
        self._cache: OrderedDict[bytes, None] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._check_lock = threading.Lock()
        self._dummy = _dummy_hash(self._users.values()) if self._users else b""

    def allows(self, authorization_header: str | None) -> bool:
        """Whether the request may pass: always with no users, else with a user's password."""
        if not self._users:
            return True
        credentials = _credentials(authorization_header)
        if credentials is None:
            return False
        user, password = credentials
        known = self._users.get(user)
        hashed = self._dummy if known is None else known
        key = _digest(user.encode(), password, hashed)
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return True
        with self._check_lock:
            try:
                matches = self._checkpw(password, hashed)
            except ValueError:  # bcrypt refuses passwords longer than 72 bytes
                matches = False
        if not (matches and known is not None):
            return False
        with self._cache_lock:
            self._cache[key] = None
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return True


def _dummy_hash(hashes: Iterable[bytes]) -> bytes:
    """A hash of a password nobody knows, as costly to check as the costliest of `hashes`."""
    cost = max(int(h[4:6]) for h in hashes)
    return bcrypt.hashpw(secrets.token_hex(16).encode(), bcrypt.gensalt(cost))


def _credentials(header: str | None) -> tuple[str, bytes] | None:
    """User name and password from ``Basic <base64 of user:password>``, or None."""
    scheme, _, token = (header or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:  # a binascii.Error, non-ASCII text or a UnicodeDecodeError: all are ValueErrors
        text = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except ValueError:
        return None
    user, colon, password = text.partition(":")
    return (user, password.encode()) if colon else None


def _digest(*parts: bytes) -> bytes:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big") + part)
    return digest.digest()
