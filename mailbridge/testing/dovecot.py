"""A private, throwaway Dovecot IMAP server for tests, benchmarks and `mailbridge demo`.

Everything lives under one directory (`base_dir`): the generated config, Dovecot's
runtime and state directories, the log, the passwd-file, a self-signed certificate and
the users' Maildirs.  The server listens on two free loopback ports (plain IMAP with
STARTTLS, and implicit TLS); it never reads /etc/dovecot and never touches port 143.

    with DovecotServer(tmp_path / "dovecot") as server:
        alice = server.add_user("alice")
        ...  # connect to server.host / server.port as alice.username / alice.password

Synchronous on purpose (stdlib `subprocess`/`socket` only), so it works in any test.

Running as root (tests and CI): Dovecot refuses to access mail as root, so mail processes
run as the `dovecot` system user and each user is chrooted into `base_dir/home`
(``home=/…/home/./alice`` in the passwd-file).  The chroot is what lets the unprivileged
mail uid reach its home even when an ancestor of `base_dir` is mode 0700 (pytest's
/tmp/pytest-of-root is).  Running as an ordinary user, everything runs as that user.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as _dt
import ipaddress
import os
import pwd
import grp
import re
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mailbridge.imap.utf7 import encode_mailbox_name

__all__ = [
    "DovecotError",
    "DovecotServer",
    "MailUser",
    "find_dovecot",
    "find_doveadm",
    "find_imap_server",
    "dovecot_available",
]

INSTALL_HINT = "apt-get install dovecot-imapd (Debian/Ubuntu; it pulls in dovecot-core)"

_USERNAME_RE = re.compile(r"^[a-z0-9_][a-z0-9._+@-]{0,63}$")
_START_TIMEOUT = 10.0


class DovecotError(Exception):
    """Dovecot is missing, failed to start, or a doveadm command failed.

    The message says what happened and how to fix it (and carries the log tail).
    """


# --------------------------------------------------------------------------- discovery


def _find_binary(name: str, extra_dirs: Iterable[str]) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for d in extra_dirs:
        candidate = os.path.join(d, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def find_dovecot() -> str | None:
    """Path of the `dovecot` master binary (PATH, then /usr/sbin, /usr/local/sbin), or None."""
    return _find_binary("dovecot", ("/usr/sbin", "/usr/local/sbin", "/sbin"))


def find_doveadm() -> str | None:
    """Path of `doveadm` (PATH, /usr/bin, /usr/local/bin, next to dovecot), or None."""
    extra = ["/usr/bin", "/usr/local/bin", "/usr/sbin", "/usr/local/sbin"]
    dc = find_dovecot()
    if dc:
        extra.insert(0, os.path.dirname(dc))
    return _find_binary("doveadm", extra)


def find_imap_server() -> str | None:
    """Path of Dovecot's `imap` service binary (dovecot-imapd; the master runs it from
    its libexec directory: /usr/lib/dovecot on Debian, /usr/libexec/dovecot elsewhere),
    or None.  `dovecot-core` alone installs the master and doveadm but not this."""
    dirs = ["/usr/lib/dovecot", "/usr/libexec/dovecot", "/usr/local/libexec/dovecot", "/usr/local/lib/dovecot"]
    dc = find_dovecot()
    if dc:
        prefix = os.path.dirname(os.path.dirname(os.path.realpath(dc)))
        dirs[:0] = [os.path.join(prefix, "lib", "dovecot"), os.path.join(prefix, "libexec", "dovecot")]
    for d in dirs:
        candidate = os.path.join(d, "imap")
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def dovecot_available() -> bool:
    """True when `dovecot`, `doveadm` and the IMAP service are installed (for pytest skip markers)."""
    return find_dovecot() is not None and find_doveadm() is not None and find_imap_server() is not None


# --------------------------------------------------------------------------- users


@dataclass
class MailUser:
    """A user of one DovecotServer.  `home`/`maildir` are real paths on this machine."""

    username: str
    password: str
    home: Path
    maildir: Path
    uid: int | None = None  # owner of the mail files (None: leave ownership alone)
    gid: int | None = None
    separator: str = "."  # the server's hierarchy separator (IMAP LIST delimiter)

    def __repr__(self) -> str:  # never show the password
        return f"MailUser(username={self.username!r}, home={str(self.home)!r})"


# --------------------------------------------------------------------------- helpers


def _free_ports(n: int) -> list[int]:
    """n distinct free loopback TCP ports (bound together, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _generate_cert(cert_path: Path, key_path: Path) -> None:
    """Self-signed EC certificate for localhost / 127.0.0.1 (also its own CA)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mailbridge test"),
            x509.NameAttribute(NameOID.COMMON_NAME, "localhost"),
        ]
    )
    now = _dt.datetime.now(_dt.timezone.utc)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(days=1))
        .not_valid_after(now + _dt.timedelta(days=3650))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_bytes)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _read_greeting(host: str, port: int, timeout: float) -> bytes:
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.settimeout(timeout)
        buf = b""
        while b"\n" not in buf:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
        with contextlib.suppress(OSError):
            s.sendall(b"x LOGOUT\r\n")
        return buf


def _proc_argvs() -> Iterable[tuple[int, list[str]]]:
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        # Dovecot's children rewrite their title into argv[0] ("dovecot-NAME/imap [...]")
        yield int(entry.name), raw.rstrip(b"\0").decode("utf-8", "replace").split("\0")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie counts as gone
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state != b"Z"
    except (OSError, IndexError):
        return True


def _imap_duration(seconds: float) -> str:
    if seconds <= 0:
        return "0"
    if float(seconds).is_integer():
        return f"{int(seconds)} secs"
    return f"{int(round(seconds * 1000))} msecs"


# Post-login capabilities of Dovecot 2.3.19 with this config; only a fallback for when
# the live probe (`doveadm exec imap`) fails.
_DEFAULT_CAPABILITIES_2_3 = (
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES "
    "THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN "
    "NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES "
    "WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW "
    "STATUS=SIZE SAVEDATE LITERAL+ NOTIFY SPECIAL-USE"
).split()


_CONF_TEMPLATE = """\
# Generated by mailbridge.testing.dovecot for a private test instance. Do not edit:
# it is rewritten on every start.
base_dir = {run_dir}
state_dir = {state_dir}
instance_name = {instance}
protocols = imap
listen = 127.0.0.1
shutdown_clients = yes

# --- logging: one file; auth_verbose so failed logins are visible (login_count) --------
log_path = {log_path}
info_log_path = {log_path}
debug_log_path = {log_path}
log_timestamp = "%Y-%m-%d %H:%M:%S "
auth_verbose = yes
auth_verbose_passwords = no
verbose_proctitle = yes
login_log_format_elements = user=<%u> method=%m rip=%r lip=%l mpid=%e %c session=<%{{session}}>

# --- TLS: STARTTLS on the plain port, implicit TLS on the imaps port ---------------------
ssl = yes
ssl_cert = <{cert_path}
ssl_key = <{key_path}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
auth_mechanisms = plain login

# --- auth: passwd-file, re-read whenever it changes (no auth cache) ----------------------
auth_cache_size = 0
auth_failure_delay = {auth_failure_delay}
auth_username_format = %Lu
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%Lu {passwd_path}.d/%Lu
}}
userdb {{
  driver = passwd-file
  args = username_format=%Lu {passwd_path}.d/%Lu
}}

# --- processes and privileges ------------------------------------------------------------
{privileges}
first_valid_uid = 1
first_valid_gid = 1
mail_max_userip_connections = 200

# --- mail ---------------------------------------------------------------------------------
mail_location = maildir:~/Maildir
mail_plugins =
mail_fsync = never
mail_temp_dir = {mail_temp_dir}
# The list index does not notice Maildir++ folders created behind Dovecot's back
# (MaildirWriter): without it LIST reads the directories.  (Costs the NOTIFY capability.)
mailbox_list_index = {list_index}
imap_idle_notify_interval = {idle_notify_interval}
mailbox_idle_check_interval = {idle_check_interval}
{capability_line}
namespace inbox {{
  inbox = yes
  separator = {separator}
  prefix =
  mailbox Drafts {{
    special_use = \\Drafts
  }}
  mailbox Junk {{
    special_use = \\Junk
  }}
  mailbox Trash {{
    special_use = \\Trash
  }}
  mailbox Sent {{
    special_use = \\Sent
  }}
  mailbox "Sent Messages" {{
    special_use = \\Sent
  }}
  mailbox Archive {{
    special_use = \\Archive
  }}
}}

service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
    ssl = yes
  }}
}}

{scale_conf}
# --- extra_conf ---------------------------------------------------------------------------
{extra_conf}
"""


def _scale_conf(max_clients: int) -> str:
    """Limits for `max_clients` concurrent IMAP sessions (see DovecotServer's max_clients).

    One imap process per session (Dovecot's default client_limit 1); login processes in
    high-performance mode (each serves many connections, a few always waiting), so a
    thousand logins at once are not a thousand forks of imap-login; the services every
    mail process keeps a connection to (anvil, stats, log, auth, config) accept them all.
    """
    if max_clients <= 0:
        return "# --- limits: Dovecot's defaults (max_clients not set)"
    processes = max_clients + 50
    clients = 2 * max_clients + 100
    return f"""\
# --- limits for {max_clients} concurrent IMAP sessions (max_clients) ----------------------
default_process_limit = {max(100, processes)}
default_client_limit = {max(1000, clients)}
service imap {{
  process_limit = {processes}
  client_limit = 1
}}
service imap-login {{
  service_count = 0
  process_min_avail = 2
  process_limit = 16
  client_limit = {max(1000, clients)}
}}
service anvil {{
  client_limit = {max(1000, clients)}
}}
service stats {{
  client_limit = {max(1000, clients)}
}}
service auth {{
  client_limit = {max(1000, clients)}
}}
service config {{
  client_limit = {max(1000, clients)}
}}
service log {{
  client_limit = {max(1000, clients)}
}}"""


# every private test server still running (Dovecot here, Cyrus and Courier in
# mailbridge.testing.servers): stopped at interpreter exit
class _Stoppable(Protocol):
    def stop(self) -> None: ...


_live_servers: "weakref.WeakSet[_Stoppable]" = weakref.WeakSet()


@atexit.register
def _stop_all_servers() -> None:  # pragma: no cover - best effort at interpreter exit
    for server in list(_live_servers):
        with contextlib.suppress(Exception):
            server.stop()


# --------------------------------------------------------------------------- the server


class DovecotServer:
    """A private Dovecot instance under `base_dir` (see the module docstring).

    Parameters:
      disable_capabilities: capability names to remove from what Dovecot advertises
        (e.g. ``("CONDSTORE", "QRESYNC")``).  Dovecot 2.3 still *executes* the
        corresponding commands if a client uses them anyway; see `capabilities`.
      idle_notify_interval: seconds between IDLE "still here" notifications
        (``imap_idle_notify_interval``).
      idle_check_interval: ``mailbox_idle_check_interval`` in seconds: how often an
        IDLEing session polls the mailbox in addition to inotify.
      auth_failure_delay: seconds Dovecot waits before answering a failed LOGIN
        (Dovecot's default is 2; 0 keeps tests fast).
      separator: hierarchy separator of the namespace ("." is Dovecot's Maildir++
        default; "/" is allowed too, then folder names may not contain ".").
      list_index: Dovecot's mailbox_list_index (default off here, unlike Dovecot: the
        index does not see folders MaildirWriter creates; on, NOTIFY is advertised).
      max_clients: concurrent IMAP sessions to plan for (0, the default: Dovecot's own
        limits, 100 imap processes).  Raises the process limit of the imap service and
        the client limits of the services every session talks to (see `_scale_conf`);
        `mail_max_userip_connections` (per user and client address) stays 200.
      extra_conf: appended verbatim to the generated config (it wins over earlier lines).

    For many users at once (benchmarks), `add_users(n, messages=k)` creates them with one
    passwd write and a small INBOX each, and `deliver(user, message)` drops a new message
    into `new/` as a delivery agent would.  With more sessions than
    /proc/sys/fs/inotify/max_user_instances (128 by default: one instance per IDLEing
    imap process, all under the mail uid), Dovecot falls back to polling every
    `idle_check_interval`; `inotify_instances_limit()` reads that limit.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        base_dir: Path | str,
        *,
        disable_capabilities: Iterable[str] = (),
        idle_notify_interval: float = 2,
        idle_check_interval: float = 1,
        auth_failure_delay: float = 0,
        separator: str = ".",
        extra_conf: str = "",
        list_index: bool = False,
        max_clients: int = 0,
        start_timeout: float = _START_TIMEOUT,
        oauth2_introspection_url: str | None = None,
    ) -> None:
        if separator not in (".", "/"):
            raise ValueError("separator must be '.' or '/'")
        self.base_dir = Path(base_dir).absolute()
        self.disable_capabilities = tuple(c.upper() for c in disable_capabilities)
        self.idle_notify_interval = idle_notify_interval
        self.idle_check_interval = idle_check_interval
        self.auth_failure_delay = auth_failure_delay
        self.separator = separator
        self.extra_conf = extra_conf
        self.list_index = list_index
        self.max_clients = max_clients
        self.start_timeout = start_timeout
        #: when set, OAUTHBEARER/XOAUTH2 tokens are validated by RFC 7662 introspection
        #: there (passdb oauth2, after the passwd-file passdb); passwords keep working
        self.oauth2_introspection_url = oauth2_introspection_url

        self.conf_path = self.base_dir / "dovecot.conf"
        self.run_dir = self.base_dir / "run"
        self.state_dir = self.base_dir / "state"
        self.log_path = self.base_dir / "dovecot.log"
        self.stderr_path = self.base_dir / "dovecot.stderr"
        self.passwd_path = self.base_dir / "passwd"
        self.home_root = self.base_dir / "home"
        self.tls_dir = self.base_dir / "tls"
        self.cert_path = self.tls_dir / "cert.pem"
        self.key_path = self.tls_dir / "key.pem"

        self.port: int = 0
        self.tls_port: int = 0
        self.instance_name = "mb-" + secrets.token_hex(4)
        #: post-login capabilities advertised (None until start(); only computed when
        #: disable_capabilities is given, else Dovecot's default list is used).
        self.capabilities: tuple[str, ...] | None = None
        self.users: dict[str, MailUser] = {}

        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.RLock()
        self._user_seq = 0

        self._as_root = os.geteuid() == 0
        self._mail_pw: pwd.struct_passwd | None = None
        self._login_pw: pwd.struct_passwd | None = None
        #: uid/gid that owns the mail files (the `dovecot` user when running as root)
        self.mail_uid: int = -1
        self.mail_gid: int = -1
        with contextlib.suppress(DovecotError):
            self._resolve_identity()

    def _resolve_identity(self) -> None:
        if self._mail_pw is not None:
            return
        if self._as_root:
            mail_user = _first_existing_user(("dovecot", "mail", "nobody"))
            login_user = _first_existing_user(("dovenull", "nobody"))
            if mail_user is None or login_user is None:
                raise DovecotError(
                    "running as root needs the system users 'dovecot' and 'dovenull' "
                    f"(created by the Debian package): {INSTALL_HINT}"
                )
            self._mail_pw, self._login_pw = mail_user, login_user
            self.mail_uid, self.mail_gid = mail_user.pw_uid, mail_user.pw_gid
        else:
            me = pwd.getpwuid(os.geteuid())
            self._mail_pw = self._login_pw = me
            self.mail_uid, self.mail_gid = me.pw_uid, os.getegid()

    # ----------------------------------------------------------------- properties

    @property
    def ca_cert_path(self) -> Path:
        """The self-signed certificate: pass it as `cafile` to verify the server."""
        return self.cert_path

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def master_pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc else None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<DovecotServer {self.base_dir} port={self.port} tls_port={self.tls_port} {state}>"

    # ----------------------------------------------------------------- lifecycle

    def __enter__(self) -> "DovecotServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Write the config and start Dovecot; returns once the port answers `* OK`."""
        with self._lock:
            if self.running:
                return
            dovecot = find_dovecot()
            if dovecot is None:
                raise DovecotError(f"dovecot is not installed: {INSTALL_HINT}")
            if find_doveadm() is None:
                raise DovecotError(f"doveadm is not installed: {INSTALL_HINT}")
            if find_imap_server() is None:
                raise DovecotError(f"Dovecot's IMAP server (dovecot-imapd) is not installed: {INSTALL_HINT}")
            self._resolve_identity()
            self._prepare_dirs()
            self._kill_stale_master()
            if self.disable_capabilities and self.capabilities is None:
                self.capabilities = self._probe_capabilities()
            keep_ports = bool(self.port and self.tls_port)
            last_error: str = ""
            for attempt in range(6):
                if not keep_ports or attempt > 0:
                    self.port, self.tls_port = _free_ports(2)
                self._write_config()
                try:
                    self._launch(dovecot)
                    return
                except _AddressInUse as e:
                    last_error = str(e)
                    continue
            raise DovecotError(f"could not find free ports for dovecot: {last_error}")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the master and every process of this instance.  Safe to call twice."""
        with self._lock:
            proc, self._proc = self._proc, None
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(min(timeout, 5.0))
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    proc.wait(5)
            elif proc is not None:
                proc.wait()
            self._reap_leftovers(timeout=min(timeout, 3.0))
            _live_servers.discard(self)

    def restart(self) -> None:
        """Stop and start again on the same ports (connections are dropped)."""
        self.stop()
        self.start()

    def instance_pids(self) -> list[int]:
        """Pids of every live process of this instance (master and children)."""
        title = f"dovecot-{self.instance_name}/"
        conf = str(self.conf_path)
        pids = []
        for pid, argv in _proc_argvs():
            if not argv:
                continue
            mine = argv[0].startswith(title) or (
                os.path.basename(argv[0]) == "dovecot" and conf in argv
            )
            if mine and _pid_alive(pid):
                pids.append(pid)
        return pids

    # ----------------------------------------------------------------- users

    def add_user(self, username: str | None = None, password: str | None = None) -> MailUser:
        """Create a user that can log in at once (the passwd-file is re-read per auth)."""
        with self._lock:
            if username is None:
                while True:
                    self._user_seq += 1
                    username = f"user{self._user_seq}"
                    if username not in self.users:
                        break
            username = username.lower()
            if not _USERNAME_RE.match(username):
                raise ValueError(
                    f"invalid username {username!r}: use a-z 0-9 . _ + @ - (not starting with '.' or '-')"
                )
            if username in self.users:
                raise ValueError(f"user {username!r} already exists")
            if password is None:
                password = "pw-" + secrets.token_urlsafe(12)
            if any(c in password for c in ":\r\n\0"):
                raise ValueError("password must not contain ':', CR, LF or NUL (passwd-file format)")
            self._resolve_identity()
            if not self.home_root.is_dir():
                self._prepare_dirs()
            home = self.home_root / username
            maildir = home / "Maildir"
            for d in (home, maildir, maildir / "cur", maildir / "new", maildir / "tmp"):
                d.mkdir(mode=0o700, exist_ok=True)
                self._chown(d)
            user = MailUser(
                username=username,
                password=password,
                home=home,
                maildir=maildir,
                uid=self.mail_uid,
                gid=self.mail_gid,
                separator=self.separator,
            )
            self.users[username] = user
            self._write_passwd()
            return user

    def add_users(self, n: int, *, prefix: str = "bulk", messages: int = 0, seed: int = 0) -> list[MailUser]:
        """Create `n` users named PREFIX1..PREFIXn (numbered on from existing ones), each
        able to log in at once, with `messages` generated messages in INBOX.

        Much faster than n `add_user` calls: only the new users' passwd files are written
        (and the combined list once), and the messages (built once, written to every
        user's Maildir by `MaildirWriter`) need no IMAP or doveadm: about 3 s for 1,000
        users with 10 messages each.
        """
        from mailbridge.testing.mailgen import MaildirWriter, corpus

        if n < 0 or messages < 0:
            raise ValueError("n and messages must be >= 0")
        with self._lock:
            self._resolve_identity()
            if not self.home_root.is_dir():
                self._prepare_dirs()
            directory = self.passwd_path.with_name(self.passwd_path.name + ".d")
            directory.mkdir(mode=0o755, exist_ok=True)
            created: list[MailUser] = []
            seq = 0
            while len(created) < n:
                seq += 1
                username = f"{prefix}{seq}".lower()
                if username in self.users:
                    continue
                if not _USERNAME_RE.match(username):
                    raise ValueError(f"invalid username {username!r}")
                home = self.home_root / username
                maildir = home / "Maildir"
                for d in (home, maildir, maildir / "cur", maildir / "new", maildir / "tmp"):
                    d.mkdir(mode=0o700, exist_ok=True)
                    self._chown(d)
                user = MailUser(username=username, password="pw-" + secrets.token_urlsafe(12), home=home,
                                maildir=maildir, uid=self.mail_uid, gid=self.mail_gid, separator=self.separator)
                tmp = directory / f".{username}.tmp"
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(self._passwd_line(user))
                os.replace(tmp, directory / username)
                self.users[username] = user
                created.append(user)
            combined = self.passwd_path.with_name(".passwd.tmp")
            fd = os.open(combined, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write("".join(self._passwd_line(u) for u in self.users.values()))
            os.replace(combined, self.passwd_path)
        if messages:
            batch = list(corpus(messages, seed=seed, folder_hint="INBOX"))
            writer = MaildirWriter()
            for user in created:
                writer.write(user, "INBOX", batch)
        return created

    def deliver(self, user: MailUser | str, message: bytes, folder: str = "INBOX", *,
                via: str = "maildir") -> Path | None:
        """Deliver one message.  via="maildir": as a plain delivery agent does, written to
        the folder's `tmp/`, renamed into `new/` (Dovecot notices it by inotify, else at
        its next check; its indexes learn of it only then), a few hundred microseconds;
        returns the file's path.  via="doveadm": `doveadm save`, which updates Dovecot's
        indexes as its own LDA/LMTP does (what NOTIFY watches), tens of milliseconds;
        returns None."""
        u = self._user(user)
        if via == "doveadm":
            self.doveadm("save", "-u", u.username, "-m", folder, input=message, timeout=60)
            return None
        if via != "maildir":
            raise ValueError("via must be 'maildir' or 'doveadm'")
        folder_dir = _maildir_folder_path(u.maildir, folder, self.separator)
        if not (folder_dir / "new").is_dir():
            raise DovecotError(f"no such folder {folder!r} for {u.username}")
        now = time.time_ns() // 1000
        name = f"{now // 1_000_000}.M{now % 1_000_000}P{os.getpid()}R{secrets.token_hex(4)}.deliver,S={len(message)}"
        tmp = folder_dir / "tmp" / name
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(message)
            while view:
                view = view[os.write(fd, view):]
            if self._as_root and u.uid is not None:
                os.fchown(fd, u.uid, u.gid if u.gid is not None else -1)
        finally:
            os.close(fd)
        final = folder_dir / "new" / name
        os.rename(tmp, final)
        return final

    @staticmethod
    def inotify_instances_limit() -> int | None:
        """/proc/sys/fs/inotify/max_user_instances (None when unreadable): the IDLEing
        sessions past it are polled every idle_check_interval instead of woken by inotify."""
        try:
            return int(Path("/proc/sys/fs/inotify/max_user_instances").read_text().strip())
        except (OSError, ValueError):
            return None

    def remove_user(self, user: MailUser | str, *, delete_mail: bool = False) -> None:
        """Remove a user from the passwd-file (its next LOGIN fails)."""
        name = (user.username if isinstance(user, MailUser) else user).lower()
        with self._lock:
            removed = self.users.pop(name, None)
            if removed is None:
                raise KeyError(name)
            self._write_passwd()
            if delete_mail:
                shutil.rmtree(removed.home, ignore_errors=True)

    def set_password(self, user: MailUser | str, password: str) -> MailUser:
        """Change a user's password (effective for the next LOGIN)."""
        name = (user.username if isinstance(user, MailUser) else user).lower()
        if any(c in password for c in ":\r\n\0"):
            raise ValueError("password must not contain ':', CR, LF or NUL (passwd-file format)")
        with self._lock:
            u = self.users[name]
            u.password = password
            self._write_passwd()
            # Dovecot notices a changed passwd-file at most once a second
            time.sleep(1.1)
            if isinstance(user, MailUser) and user is not u:
                user.password = password
            return u

    def kick(self, user: MailUser | str) -> str:
        """Disconnect every IMAP session of the user (`doveadm kick`)."""
        name = user.username if isinstance(user, MailUser) else user
        return self.doveadm("kick", name)

    # ----------------------------------------------------------------- doveadm

    def doveadm(self, *args: str, input: bytes | None = None, timeout: float = 120) -> str:
        """Run `doveadm -c <this config> ARGS…`; returns stdout, raises DovecotError."""
        doveadm = find_doveadm()
        if doveadm is None:
            raise DovecotError(f"doveadm is not installed: {INSTALL_HINT}")
        if not self.conf_path.exists():
            raise DovecotError("the server has never been started (no config yet): call start()")
        cmd = [doveadm, "-c", str(self.conf_path), *map(str, args)]
        res = subprocess.run(cmd, input=input, capture_output=True, timeout=timeout)
        if res.returncode != 0:
            raise DovecotError(
                f"`doveadm {' '.join(map(str, args))}` failed with exit code {res.returncode}: "
                f"{res.stderr.decode('utf-8', 'replace').strip() or res.stdout.decode('utf-8', 'replace').strip()}"
            )
        return res.stdout.decode("utf-8", "replace")

    def mailbox_status(self, user: MailUser | str, folder: str) -> dict[str, int]:
        """`doveadm mailbox status` (messages uidnext uidvalidity highestmodseq), no IMAP."""
        name = user.username if isinstance(user, MailUser) else user
        out = self.doveadm(
            "mailbox", "status", "-u", name, "messages uidnext uidvalidity highestmodseq", folder
        )
        result: dict[str, int] = {}
        for token in out.split():
            if "=" in token:
                k, v = token.split("=", 1)
                if v.isdigit():
                    result[k] = int(v)
        return result

    def set_uidvalidity(self, user: MailUser | str, folder: str, value: int) -> None:
        """Change a folder's UIDVALIDITY in place (UIDs stay): a UIDVALIDITY reset.

        Verified with `doveadm mailbox status` afterwards; sessions that have the folder
        selected are disconnected by Dovecot when they notice.
        """
        if not 0 < int(value) < 2**32:
            raise ValueError("UIDVALIDITY must be in 1..2^32-1")
        name = user.username if isinstance(user, MailUser) else user
        self.doveadm("mailbox", "update", "-u", name, "--uid-validity", str(int(value)), folder)
        got = self.mailbox_status(name, folder).get("uidvalidity")
        if got != int(value):
            raise DovecotError(
                f"doveadm mailbox update --uid-validity {value} did not take effect on "
                f"{folder!r} (STATUS says {got})"
            )

    def renumber_folder(self, user: MailUser | str, folder: str) -> None:
        """A harsher UIDVALIDITY reset: forget the folder's index and UID list so Dovecot
        assigns a new UIDVALIDITY and renumbers every message from UID 1 (as a server
        restored from backup does).  Sessions with the folder open are kicked first.
        """
        u = self._user(user)
        with contextlib.suppress(DovecotError):  # exit 68: nobody was connected
            self.kick(u)
        folder_dir = _maildir_folder_path(u.maildir, folder, self.separator)
        if not folder_dir.is_dir():
            raise DovecotError(f"no such folder {folder!r} for {u.username}")
        before = self.mailbox_status(u, folder).get("uidvalidity")
        for p in folder_dir.iterdir():
            if p.name.startswith("dovecot-uidlist") or p.name.startswith("dovecot.index"):
                p.unlink()
        # Dovecot derives a new UIDVALIDITY from the clock; make sure it differs.
        after = self.mailbox_status(u, folder).get("uidvalidity")
        if after == before and after is not None:
            self.set_uidvalidity(u, folder, (after + 1) % 2**32 or 1)

    # ----------------------------------------------------------------- logs

    def log_text(self) -> str:
        """Dovecot's log file (for debugging failing tests)."""
        try:
            return self.log_path.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def login_attempts(self, username: str, *, settle: float = 0.15) -> tuple[int, int]:
        """(successful, failed) LOGIN/AUTHENTICATE attempts of `username` seen in the log.

        Successes are imap-login's ``Login: user=<name>`` lines, failures are the auth
        process's ``passwd-file(name,…): Password mismatch`` / ``unknown user`` lines
        (auth_verbose = yes).  Dovecot writes its log asynchronously; this waits until
        the counts have been stable for `settle` seconds (at most 3 s).
        """
        deadline = time.monotonic() + 3.0
        prev = self._count_logins(username)
        stable_since = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(min(0.05, settle) if settle > 0 else 0)
            cur = self._count_logins(username)
            if cur != prev:
                prev, stable_since = cur, time.monotonic()
            elif time.monotonic() - stable_since >= settle:
                break
        return prev

    def login_count(self, username: str, *, settle: float = 0.15) -> int:
        """Number of LOGIN attempts (successful + failed) for `username` in the log."""
        ok, failed = self.login_attempts(username, settle=settle)
        return ok + failed

    def wait_for_log(self, pattern: str, timeout: float = 5.0) -> re.Match[str]:
        """Wait until a line of the log matches the regex `pattern`; returns the match."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.log_text())
            if m:
                return m
            if time.monotonic() > deadline:
                raise TimeoutError(f"no log line matched {pattern!r} within {timeout}s")
            time.sleep(0.05)

    def _count_logins(self, username: str) -> tuple[int, int]:
        name = re.escape(username.lower())
        text = self.log_text()
        ok = len(re.findall(rf"imap-login: Info: Login: user=<{name}>", text, re.IGNORECASE))
        failed = len(
            re.findall(
                rf"auth: Info: passwd-file\({name},[^)]*\): (?:Password mismatch|unknown user)",
                text,
                re.IGNORECASE,
            )
        )
        return ok, failed

    # ----------------------------------------------------------------- internals

    def _user(self, user: MailUser | str) -> MailUser:
        if isinstance(user, MailUser):
            return user
        return self.users[user.lower()]

    def _chown(self, path: Path) -> None:
        if self._as_root:
            os.chown(path, self.mail_uid, self.mail_gid)

    def _prepare_dirs(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(exist_ok=True)
        os.chmod(self.run_dir, 0o755)  # Dovecot wants base_dir world-readable
        for d in (self.state_dir, self.tls_dir):
            d.mkdir(mode=0o700, exist_ok=True)
        self.home_root.mkdir(mode=0o755, exist_ok=True)
        os.chmod(self.home_root, 0o755)
        tmp = self.home_root / ".mail-tmp"  # mail_temp_dir inside the chroot
        tmp.mkdir(exist_ok=True)
        os.chmod(tmp, 0o1777)
        if not (self.cert_path.exists() and self.key_path.exists()):
            _generate_cert(self.cert_path, self.key_path)
        if not self.passwd_path.exists():
            self._write_passwd()

    def _passwd_line(self, u: MailUser) -> str:
        if self._as_root:
            home = f"{self.home_root}/./{u.username}"  # chroot to home_root
        else:
            home = str(u.home)
        return f"{u.username}:{{PLAIN}}{u.password}:{self.mail_uid}:{self.mail_gid}::{home}::\n"

    def _write_passwd(self) -> None:
        """One passwd-file per user (`passwd.d/<user>`), rewritten only when its line
        changes: a new user is a new file Dovecot opens fresh, so it can log in at once
        (rewriting one shared file raced Dovecot's mtime-based re-read).  `passwd` keeps
        the combined list for people reading along."""
        directory = self.passwd_path.with_name(self.passwd_path.name + ".d")
        directory.mkdir(mode=0o755, exist_ok=True)
        wanted = {u.username.lower(): self._passwd_line(u) for u in self.users.values()}
        for path in directory.iterdir():
            if path.name not in wanted and not path.name.startswith("."):
                path.unlink()
        for name, line in wanted.items():
            path = directory / name
            try:
                if path.read_text("utf-8") == line:
                    continue
                old_mtime = path.stat().st_mtime_ns
            except FileNotFoundError:
                old_mtime = None
            tmp = directory / f".{name}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(line)
            os.replace(tmp, path)
            # Dovecot re-reads a passwd-file when its mtime (seconds) or size changes
            if old_mtime is not None:
                new_mtime = path.stat().st_mtime_ns
                if new_mtime // 10**9 <= old_mtime // 10**9:
                    bumped = (old_mtime // 10**9 + 1) * 10**9
                    os.utime(path, ns=(bumped, bumped))
        tmp = self.passwd_path.with_name(".passwd.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("".join(wanted.values()))
        os.replace(tmp, self.passwd_path)

    def _identity(self) -> tuple[pwd.struct_passwd, pwd.struct_passwd]:
        """The (mail, login) users Dovecot runs as; DovecotError when they are missing."""
        self._resolve_identity()
        assert self._mail_pw is not None and self._login_pw is not None
        return self._mail_pw, self._login_pw

    def _privileges_block(self) -> str:
        mail_pw, login_pw = self._identity()
        if self._as_root:
            return "\n".join(
                [
                    # Dovecot refuses mail access as root ("Mail access not allowed for
                    # root"); login processes must not run as root either.
                    f"mail_uid = {mail_pw.pw_name}",
                    f"mail_gid = {_group_name(self.mail_gid)}",
                    # auth/anvil/stats as root: they read files under base_dir, whose
                    # ancestors may be 0700 (pytest's basetemp).
                    "default_internal_user = root",
                    "default_internal_group = root",
                    f"default_login_user = {login_pw.pw_name}",
                    # Every user is chrooted into home_root (home=/…/home/./name).
                    f"valid_chroot_dirs = {self.home_root}",
                ]
            )
        me = mail_pw.pw_name
        return "\n".join(
            [
                # Rootless: every process runs as the current user; no chroots.
                f"default_internal_user = {me}",
                f"default_internal_group = {_group_name(self.mail_gid)}",
                f"default_login_user = {me}",
                "service anvil {\n  chroot =\n}",
                "service imap-login {\n  chroot =\n}",
            ]
        )

    def _write_config(self) -> None:
        if self.disable_capabilities:
            caps = self.capabilities or ()
            capability_line = "imap_capability = " + " ".join(caps)
        else:
            capability_line = "# imap_capability: Dovecot's default"
        text = _CONF_TEMPLATE.format(
            run_dir=self.run_dir,
            state_dir=self.state_dir,
            instance=self.instance_name,
            log_path=self.log_path,
            cert_path=self.cert_path,
            key_path=self.key_path,
            auth_failure_delay=_imap_duration(self.auth_failure_delay),
            passwd_path=self.passwd_path,
            privileges=self._privileges_block(),
            mail_temp_dir="/.mail-tmp" if self._as_root else self.home_root / ".mail-tmp",
            idle_notify_interval=_imap_duration(self.idle_notify_interval) if self.idle_notify_interval else "0",
            idle_check_interval=_imap_duration(self.idle_check_interval) if self.idle_check_interval else "0",
            capability_line=capability_line,
            separator=self.separator,
            list_index="yes" if self.list_index else "no",
            port=self.port,
            tls_port=self.tls_port,
            scale_conf=_scale_conf(self.max_clients),
            extra_conf=self.extra_conf,
        )
        if self.oauth2_introspection_url:
            text += self._oauth2_conf()
        self.conf_path.write_text(text, "utf-8")

    def _oauth2_conf(self) -> str:
        """The oauth2 passdb (introspection by POST) and the OAuth2 SASL mechanisms."""
        ext = self.base_dir / "dovecot-oauth2.conf.ext"
        ext.write_text(
            f"introspection_mode = post\nintrospection_url = {self.oauth2_introspection_url}\n"
            "username_attribute = username\nactive_attribute = active\nactive_value = true\n", "utf-8")
        return ("\n# --- OAuth2 (mailbridge.testing.oauth2_server) ---\n"
                "auth_mechanisms = plain login oauthbearer xoauth2\n"
                f"passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  args = {ext}\n}}\n")

    def _probe_capabilities(self) -> tuple[str, ...]:
        """Dovecot's default post-login capability list, minus disable_capabilities.

        Asks the real binary, no server needed: writes the config with the default list
        and runs `doveadm exec imap` pre-authenticated (USER/HOME from the environment,
        so no userdb lookup) with `CAPABILITY`.
        """
        saved = self.disable_capabilities
        self.disable_capabilities = ()
        probe_home = self.home_root / ".probe"
        caps: list[str] = []
        try:
            self._write_config()
            probe_home.mkdir(exist_ok=True)
            self._chown(probe_home)
            doveadm = find_doveadm() or "doveadm"
            env = dict(os.environ, USER="probe", HOME=str(probe_home))
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                res = subprocess.run(
                    [doveadm, "-c", str(self.conf_path), "exec", "imap"],
                    input=b"a CAPABILITY\r\nb LOGOUT\r\n",
                    capture_output=True,
                    env=env,
                    timeout=20,
                )
                m = re.search(rb"^\* CAPABILITY (.+?)\r?$", res.stdout, re.MULTILINE)
                if m:
                    caps = m.group(1).decode("ascii", "replace").split()
        finally:
            self.disable_capabilities = saved
            shutil.rmtree(probe_home, ignore_errors=True)
        if not caps:
            caps = list(_DEFAULT_CAPABILITIES_2_3)
        disabled = set(self.disable_capabilities)
        return tuple(c for c in caps if c.upper() not in disabled)

    def _kill_stale_master(self) -> None:
        """A previous run with this base_dir left its master alive: stop it."""
        pidfile = self.run_dir / "master.pid"
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").decode("utf-8", "replace").split("\0")
        except OSError:
            return
        if os.path.basename(argv[0]) == "dovecot" and str(self.conf_path) in argv and _pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._reap_leftovers(timeout=5)

    def _launch(self, dovecot: str) -> None:
        try:
            log_size_before = self.log_path.stat().st_size
        except FileNotFoundError:
            log_size_before = 0
        stderr = open(self.stderr_path, "wb")
        try:
            proc = subprocess.Popen(
                [dovecot, "-F", "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
                close_fds=True,
            )
        finally:
            stderr.close()
        self._proc = proc
        _live_servers.add(self)
        log_offset = log_size_before
        deadline = time.monotonic() + self.start_timeout
        last_exc: Exception | None = None
        while time.monotonic() < deadline:
            rc = proc.poll()
            if rc is not None:
                self._proc = None
                err = self._stderr_text()
                if "Address already in use" in err or "Address already in use" in self.log_tail(5):
                    raise _AddressInUse(err.strip())
                hint = ""
                if "Unknown protocol" in err or "imap" in err and "No such file" in err:
                    hint = f" (is dovecot-imapd installed? {INSTALL_HINT})"
                raise DovecotError(
                    f"dovecot exited with code {rc} while starting{hint}.\n"
                    f"stderr:\n{err.strip()}\nlog tail ({self.log_path}):\n{self.log_tail()}"
                )
            new_log = self._log_since(log_offset)
            if "Fatal:" in new_log or "command startup failed" in new_log:
                err = self._stderr_text()
                self.stop()
                raise DovecotError(
                    f"dovecot failed to start a service.\nstderr:\n{err.strip()}\n"
                    f"log ({self.log_path}):\n{new_log.strip()}"
                )
            try:
                greeting = _read_greeting(self.host, self.port, timeout=2.0)
                if greeting.startswith(b"* OK"):
                    return
                last_exc = DovecotError(f"unexpected greeting {greeting[:200]!r}")
            except OSError as e:
                last_exc = e
            time.sleep(0.05)
        err = self._stderr_text()
        self.stop()
        raise DovecotError(
            f"dovecot did not answer on {self.host}:{self.port} within {self.start_timeout:.0f}s "
            f"({last_exc}).\nstderr:\n{err.strip()}\nlog tail ({self.log_path}):\n{self.log_tail()}"
        )

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def _stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text("utf-8", "replace")
        except OSError:
            return ""

    def _reap_leftovers(self, timeout: float) -> None:
        """After the master is gone: children still serving clients linger for up to
        ~10 s ("Server shutting down"); SIGTERM them, then SIGKILL what remains."""
        deadline = time.monotonic() + timeout
        sig = signal.SIGTERM
        while True:
            pids = self.instance_pids()
            if not pids:
                return
            if time.monotonic() > deadline:
                sig = signal.SIGKILL
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            if sig == signal.SIGKILL:
                time.sleep(0.1)
                return
            time.sleep(0.05)


class _AddressInUse(DovecotError):
    pass


# --------------------------------------------------------------------------- misc


def _first_existing_user(names: Iterable[str]) -> pwd.struct_passwd | None:
    for n in names:
        try:
            return pwd.getpwnam(n)
        except KeyError:
            continue
    return None


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _maildir_folder_path(maildir: Path, folder: str, separator: str = ".") -> Path:
    """Directory of `folder` (UTF-8, with the server's separator) in a Maildir++ tree."""
    if folder.upper() == "INBOX" or folder == "":
        return maildir
    parts = folder.split(separator)
    if any(p == "" for p in parts):
        raise ValueError(f"invalid folder name {folder!r}")
    if separator != "." and any("." in p for p in parts):
        raise ValueError(f"folder name {folder!r} contains '.', impossible with Maildir++ and separator {separator!r}")
    if any("/" in p for p in parts):
        raise ValueError(f"folder name {folder!r} contains '/'")
    return maildir / ("." + ".".join(encode_mailbox_name(p) for p in parts))
