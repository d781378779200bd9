"""Private, throwaway Cyrus IMAP and Courier-IMAP servers for tests, beside Dovecot.

Debian's `cyrus-imapd` and `courier-imap` packages conflict with `dovecot-imapd`
(installing either removes Dovecot's IMAP server), so they are never installed: their
packages (and the libraries they need that this machine lacks) are fetched with
`apt-get download` and unpacked with `dpkg-deb -x` into a private prefix under
`server_cache_dir()` (`ensure_unpacked`, idempotent and cached).  Each server then runs
privately on a free loopback port, with its config, data and log under one `base_dir`,
plaintext LOGIN allowed:

    with CyrusServer(base) as server:
        alice = server.add_user("alice")
        ...  # connect to server.host / server.port as alice.username / alice.password

- Cyrus runs from the prefix directly (every path is in its imapd.conf / cyrus.conf;
  `LD_LIBRARY_PATH` finds the unpacked libraries).  Users live in a private sasldb
  (`saslpasswd2 -f`); their INBOX is created by an admin user over IMAP.  Cyrus refuses
  to run as root, so as root it runs as the `mail` system user (`cyrus_user`).
- Courier's paths (/etc/courier, /usr/lib/courier, /run/courier) are compiled in, so it
  runs inside a private mount namespace (`unshare -m`, root only): the prefix overlaid
  on /usr and /etc, `base_dir/etc` bound over /etc/courier, a tmpfs on /run.  Users are
  in a userdb (built with the package's `makedatprog`); mail is accessed as `mail`.

`base_dir` and the cache must be reachable by that unprivileged user (no 0700 ancestor:
pytest's /tmp/pytest-of-root is one; use `tempfile.mkdtemp()` under /tmp).

Synchronous on purpose (stdlib `subprocess`/`socket` only), like `DovecotServer`.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import imaplib
import os
import pwd
import re
import secrets
import shutil
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType

from mailbridge.testing.dovecot import MailUser, _free_ports, _live_servers, _read_greeting

__all__ = [
    "CourierServer",
    "CyrusServer",
    "PACKAGES",
    "ServerPackagesError",
    "ensure_unpacked",
    "server_cache_dir",
    "unpack_command",
]

#: Debian packages unpacked per server kind.  The first ones are the servers; the rest
#: are libraries they link that a Debian 12 machine with Dovecot may lack (those already
#: installed are skipped).
PACKAGES: dict[str, tuple[str, ...]] = {
    "cyrus": (
        "cyrus-imapd", "cyrus-common", "sasl2-bin",
        "libical3", "libpcre3", "libxapian30", "libicu72", "libjansson4", "libxml2",
        "libsqlite3-0", "libpq5", "libwrap0", "libldap-2.5-0", "libkrb5-3",
        "libsasl2-modules-db", "libdb5.3",
    ),
    "courier": (
        "courier-imap", "courier-base", "courier-authlib", "courier-authlib-userdb",
        "courier-authdaemon", "libcourier-unicode4", "gamin",
        "libltdl7", "libidn12", "libgamin0", "libgdbm6", "libgnutls30", "libpcre3",
    ),
}
#: Executables that must exist (and find all their libraries) after unpacking.
_KEY_BINARIES: dict[str, tuple[str, ...]] = {
    "cyrus": ("usr/lib/cyrus/bin/master", "usr/lib/cyrus/bin/imapd",
              "usr/lib/cyrus/bin/ctl_cyrusdb", "usr/sbin/saslpasswd2"),
    "courier": ("usr/bin/imapd", "usr/lib/courier/courier/imaplogin", "usr/sbin/couriertcpd",
                "usr/lib/courier/courier-authlib/authdaemond",
                "usr/lib/courier/courier-authlib/makedatprog"),
}
_START_TIMEOUT = 10.0
_USERNAME_RE = re.compile(r"^[a-z0-9_][a-z0-9_-]{0,63}$")


class ServerPackagesError(Exception):
    """A server's packages cannot be fetched or unpacked, or the server failed to start.

    The message says what happened and the exact command that fixes it (with log tails).
    """


class PackagesUnavailable(ServerPackagesError):
    """`apt-get download` failed (no network, no package index): the server cannot be had."""


# --------------------------------------------------------------------------- the prefix


def server_cache_dir() -> Path:
    """Where the unpacked packages live: $MAILBRIDGE_TEST_SERVERS, else
    /var/cache/mailbridge-test-servers as root (reachable by the servers' unprivileged
    user, unlike /root), else $XDG_CACHE_HOME (~/.cache)/mailbridge-test-servers."""
    env = os.environ.get("MAILBRIDGE_TEST_SERVERS", "").strip()
    if env:
        return Path(env).absolute()
    if os.geteuid() == 0:
        return Path("/var/cache/mailbridge-test-servers")
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg) if xdg else Path.home() / ".cache") / "mailbridge-test-servers"


def unpack_command(kind: str) -> str:
    """The shell command that fetches and unpacks `kind` ("cyrus" or "courier") by hand."""
    return ("python -c 'from mailbridge.testing.servers import ensure_unpacked; "
            f"ensure_unpacked(\"{kind}\")'  (needs network access to Debian's mirrors; "
            f"runs: apt-get update && apt-get download {' '.join(PACKAGES[kind])})")


def _installed(package: str) -> bool:
    try:
        res = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0 and "install ok installed" in res.stdout


def _library_path(root: Path) -> str:
    dirs = [root / "usr/lib/x86_64-linux-gnu", root / "lib/x86_64-linux-gnu", root / "usr/lib",
            root / "usr/lib/courier-authlib"]
    return ":".join(str(d) for d in dirs if d.is_dir())


def _missing_libraries(root: Path, kind: str) -> list[str]:
    env = dict(os.environ, LD_LIBRARY_PATH=_library_path(root))
    missing: set[str] = set()
    for rel in _KEY_BINARIES[kind]:
        path = root / rel
        if not path.is_file():
            missing.add(f"{rel} (not unpacked)")
            continue
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            res = subprocess.run(["ldd", str(path)], capture_output=True, text=True, env=env, timeout=20)
            missing.update(line.split("=>")[0].strip() for line in res.stdout.splitlines()
                           if "not found" in line)
    return sorted(missing)


_unpack_lock = threading.Lock()


def ensure_unpacked(kind: str, cache: Path | None = None) -> Path:
    """The private prefix holding `kind`'s unpacked packages ("cyrus" or "courier").

    Cached: when `<cache>/<kind>/root/.complete` records the same package list, returns
    at once.  Otherwise runs `apt-get download` (once more after `apt-get update` when the
    first try fails) in `<cache>/<kind>/debs`, `dpkg-deb -x` into a fresh `root`, and checks
    with ldd that the key binaries find their libraries.  Never installs anything.
    Raises PackagesUnavailable when the download fails, ServerPackagesError otherwise.
    """
    if kind not in PACKAGES:
        raise ValueError(f"unknown server kind {kind!r}")
    base = (cache or server_cache_dir()) / kind
    root = base / "root"
    stamp = root / ".complete"
    wanted = " ".join(PACKAGES[kind])
    with _unpack_lock:
        with contextlib.suppress(OSError):
            if stamp.read_text("utf-8").splitlines()[0] == wanted:
                return root
        if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
            raise PackagesUnavailable(f"apt-get/dpkg-deb not found: {kind} needs a Debian system; "
                                      f"then run {unpack_command(kind)}")
        debs = base / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        os.chmod(base.parent, 0o755)
        os.chmod(base, 0o755)
        packages = [p for i, p in enumerate(PACKAGES[kind]) if i < 3 or not _installed(p)]
        have = {f.name.split("_", 1)[0] for f in debs.glob("*.deb")}
        todo = [p for p in packages if p not in have]
        if todo:
            err = _apt_download(debs, todo)
            if err is not None:
                with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                    subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=180)
                err = _apt_download(debs, todo)
            if err is not None:
                raise PackagesUnavailable(
                    f"cannot download {kind}'s packages ({' '.join(todo)}): {err.strip()[-600:]}\n"
                    f"fix: {unpack_command(kind)}")
        tmp_root = base / "root.tmp"
        shutil.rmtree(tmp_root, ignore_errors=True)
        tmp_root.mkdir()
        versions = []
        for deb in sorted(debs.glob("*.deb")):
            if deb.name.split("_", 1)[0] not in packages:
                continue
            res = subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp_root)], capture_output=True, text=True)
            if res.returncode != 0:
                raise ServerPackagesError(f"dpkg-deb -x {deb} failed: {res.stderr.strip()}")
            versions.append(deb.name.removesuffix(".deb"))
        os.chmod(tmp_root, 0o755)
        missing = _missing_libraries(tmp_root, kind)
        if missing:
            raise ServerPackagesError(
                f"{kind} unpacked into {tmp_root} but misses {', '.join(missing)}; find the packages "
                f"with `apt-file search` and add them to PACKAGES[{kind!r}] in mailbridge/testing/servers.py")
        (tmp_root / ".complete").write_text(wanted + "\n" + "\n".join(versions) + "\n", "utf-8")
        shutil.rmtree(root, ignore_errors=True)
        tmp_root.rename(root)
        return root


def unpacked_versions(kind: str, cache: Path | None = None) -> list[str]:
    """The package files (name_version_arch) unpacked for `kind`, [] when not unpacked."""
    stamp = (cache or server_cache_dir()) / kind / "root" / ".complete"
    with contextlib.suppress(OSError):
        return stamp.read_text("utf-8").splitlines()[1:]
    return []


def _apt_download(debs: Path, packages: list[str]) -> str | None:
    try:
        res = subprocess.run(["apt-get", "download", "-q", *packages], cwd=debs,
                             capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return None if res.returncode == 0 else (res.stderr or res.stdout)


# --------------------------------------------------------------------------- shared parts


def _service_user() -> pwd.struct_passwd:
    """Who the servers run as / own the mail: `mail` (else nobody) as root, else oneself."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    for name in ("mail", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise ServerPackagesError("running as root needs the system user 'mail' (or 'nobody')")


def _check_reachable(path: Path, who: pwd.struct_passwd) -> None:
    """ServerPackagesError when an ancestor of `path` keeps `who` out (0700 and not theirs)."""
    if who.pw_uid == os.geteuid():
        return
    for p in [path, *path.parents]:
        with contextlib.suppress(FileNotFoundError):
            st = p.stat()
            if st.st_uid != who.pw_uid and not st.st_mode & stat.S_IXOTH:
                raise ServerPackagesError(
                    f"{p} (mode {stat.S_IMODE(st.st_mode):o}) keeps the server's user {who.pw_name} "
                    f"out of {path}; use a base_dir under /tmp made with tempfile.mkdtemp()")


class _PrivateServer:
    """What Cyrus and Courier share: ports, users, the process group, start and stop."""

    kind = ""
    host = "127.0.0.1"
    #: None: these servers listen on one plain port only (no TLS)
    tls_port: int | None = None
    ca_cert_path: Path | None = None
    separator = "."
    #: the prefix of the personal namespace ("INBOX." on Courier)
    folder_prefix = ""

    def __init__(self, base_dir: Path | str, *, start_timeout: float = _START_TIMEOUT) -> None:
        self.base_dir = Path(base_dir).absolute()
        self.start_timeout = start_timeout
        self.port = 0
        self.users: dict[str, MailUser] = {}
        self.stderr_path = self.base_dir / "server.stderr"
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.RLock()
        self._user_seq = 0
        self._owner = _service_user()
        self.root: Path | None = None

    def __enter__(self) -> "_PrivateServer":
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def versions(self) -> list[str]:
        """The unpacked package files this server runs from."""
        return unpacked_versions(self.kind)

    def folder(self, name: str) -> str:
        """`name` ("Sent", "Lists.python-dev") as this server spells it ("INBOX.Sent" on
        Courier); INBOX stays INBOX."""
        return name if name.upper() == "INBOX" else self.folder_prefix + name

    def start(self) -> None:
        """Unpack if needed, write the config, start on a free loopback port and return once
        the greeting is served (ServerPackagesError with the log tail otherwise)."""
        with self._lock:
            if self.running:
                return
            self.root = ensure_unpacked(self.kind)
            self.base_dir.mkdir(parents=True, exist_ok=True)
            os.chmod(self.base_dir, 0o755)
            _check_reachable(self.base_dir, self._owner)
            _check_reachable(self.root, self._owner)
            self.port = _free_ports(1)[0]
            self._prepare()
            argv, env = self._command()
            with open(self.stderr_path, "ab") as err:
                self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                              env=env, start_new_session=True, close_fds=True)
            _live_servers.add(self)
            deadline = time.monotonic() + self.start_timeout
            last: object = None
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    rc = self._proc.returncode
                    self._proc = None
                    raise ServerPackagesError(f"{self.kind} exited with code {rc} while starting:\n{self.log_tail()}")
                try:
                    greeting = _read_greeting(self.host, self.port, timeout=2.0)
                    if greeting.startswith(b"* OK"):
                        self.greeting = greeting.decode("utf-8", "replace").strip()
                        self._after_start()
                        return
                    last = greeting[:200]
                except OSError as exc:
                    last = exc
                time.sleep(0.05)
            self.stop()
            raise ServerPackagesError(f"{self.kind} did not answer on {self.host}:{self.port} within "
                                      f"{self.start_timeout:.0f}s ({last}):\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM the server's process group, SIGKILL what is left after 5 s.  Idempotent."""
        with self._lock:
            proc, self._proc = self._proc, None
            if proc is None:
                return
            namespace = self._namespace(proc.pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            if namespace is not None:
                # Courier's gam_server detaches into its own session: end what is left
                # in the server's private mount namespace
                for pid in _pids_in_namespace(namespace):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)

    def _namespace(self, pid: int) -> str | None:
        """The mount namespace of the server's processes when it is private, else None."""
        return None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.stderr_path.read_text("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def add_user(self, username: str | None = None, password: str | None = None) -> MailUser:
        """Create a user with an empty INBOX that can log in at once."""
        with self._lock:
            if username is None:
                while True:
                    self._user_seq += 1
                    username = f"user{self._user_seq}"
                    if username not in self.users:
                        break
            username = username.lower()
            if not _USERNAME_RE.match(username):
                raise ValueError(f"invalid username {username!r}: use a-z 0-9 _ - (no dots)")
            if username in self.users:
                raise ValueError(f"user {username!r} already exists")
            if password is None:
                password = "pw-" + secrets.token_urlsafe(12)
            if any(c in password for c in "|\r\n\0"):
                raise ValueError("password must not contain '|', CR, LF or NUL")
            user = self._create_user(username, password)
            self.users[username] = user
            return user

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            os.chown(path, self._owner.pw_uid, self._owner.pw_gid)

    # per server
    def _prepare(self) -> None:
        raise NotImplementedError

    def _command(self) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def _after_start(self) -> None:
        pass

    def _create_user(self, username: str, password: str) -> MailUser:
        raise NotImplementedError


# --------------------------------------------------------------------------- Cyrus

_CYRUS_ADMIN = "mbadmin"

_IMAPD_CONF = """\
# Generated by mailbridge.testing.servers for a private test instance.
configdirectory: {base}/config
partition-default: {base}/spool
defaultpartition: default
servername: localhost
admins: {admin}
sasl_pwcheck_method: auxprop
sasl_auxprop_plugin: sasldb
sasl_sasldb_path: {base}/sasldb2
sasl_mech_list: PLAIN LOGIN
allowplaintext: yes
unixhierarchysep: no
altnamespace: yes
cyrus_user: {user}
cyrus_group: {group}
idlesocket: {base}/run/idle
notifysocket: {base}/run/notify
lmtpsocket: {base}/run/lmtp
syslog_prefix: mailbridge-cyrus
"""

_CYRUS_CONF = """\
START {{
  recover cmd="{bin}/ctl_cyrusdb -C {conf} -r"
}}
SERVICES {{
  imap cmd="{bin}/imapd -C {conf}" listen="127.0.0.1:{port}" prefork=1 maxchild=200
}}
EVENTS {{
  checkpoint cmd="{bin}/ctl_cyrusdb -C {conf} -c" period=30
}}
"""


class CyrusServer(_PrivateServer):
    """A private Cyrus IMAP 3.x (Debian's packages, unpacked) under `base_dir`.

    Alternate namespace (folders beside INBOX, not under it), "." as separator, users in
    a private sasldb; Debian's default of no `idled` (IDLE reports news when polled).
    """

    kind = "cyrus"

    def _prepare(self) -> None:
        for name in ("config", "spool", "run"):
            d = self.base_dir / name
            d.mkdir(exist_ok=True)
            self._chown(d)
        self.conf_path = self.base_dir / "imapd.conf"
        self.conf_path.write_text(_IMAPD_CONF.format(
            base=self.base_dir, admin=_CYRUS_ADMIN, user=self._owner.pw_name,
            group=_group_name(self._owner.pw_gid)), "utf-8")
        assert self.root is not None
        (self.base_dir / "cyrus.conf").write_text(_CYRUS_CONF.format(
            bin=self.root / "usr/lib/cyrus/bin", conf=self.conf_path, port=self.port), "utf-8")
        if not hasattr(self, "_admin_password"):
            self._admin_password = secrets.token_urlsafe(16)
            self._saslpasswd(_CYRUS_ADMIN, self._admin_password)

    def _env(self) -> dict[str, str]:
        assert self.root is not None
        return dict(os.environ, LD_LIBRARY_PATH=_library_path(self.root))

    def _command(self) -> tuple[list[str], dict[str, str]]:
        assert self.root is not None
        return ([str(self.root / "usr/lib/cyrus/bin/master"), "-C", str(self.conf_path),
                 "-M", str(self.base_dir / "cyrus.conf"), "-p", str(self.base_dir / "run/master.pid"),
                 "-D", "-L", str(self.base_dir / "master.log")], self._env())

    def _saslpasswd(self, username: str, password: str) -> None:
        assert self.root is not None
        db = self.base_dir / "sasldb2"
        res = subprocess.run([str(self.root / "usr/sbin/saslpasswd2"), "-f", str(db), "-u", "localhost",
                              "-p", "-c", username], input=password.encode(), capture_output=True,
                             env=self._env(), timeout=20)
        if res.returncode != 0:
            raise ServerPackagesError(f"saslpasswd2 for {username} failed: {res.stderr.decode(errors='replace')}")
        self._chown(db)

    def _create_user(self, username: str, password: str) -> MailUser:
        if not self.running:
            raise ServerPackagesError("start the Cyrus server before adding users")
        self._saslpasswd(username, password)
        admin = imaplib.IMAP4(self.host, self.port, timeout=20)
        try:
            admin.login(_CYRUS_ADMIN, self._admin_password)
            typ, data = admin.create(f"user.{username}")
            if typ != "OK":
                raise ServerPackagesError(f"Cyrus CREATE user.{username}: {typ} {data!r}")
        finally:
            with contextlib.suppress(Exception):
                admin.logout()
        spool = self.base_dir / "spool"
        return MailUser(username=username, password=password, home=spool, maildir=spool,
                        uid=self._owner.pw_uid, gid=self._owner.pw_gid, separator=".")


# --------------------------------------------------------------------------- Courier

_AUTHDAEMONRC = """\
authmodulelist="authuserdb"
daemons=1
authdaemonvar=/run/courier/authdaemon
DEBUG_LOGIN=0
DEFAULTOPTIONS=""
LOGGEROPTS=""
"""

#: Courier's environment (Debian's /etc/courier/imapd defaults, no TLS, LOGIN allowed)
_COURIER_ENV = {
    "IMAP_CAPABILITY": "IMAP4rev1 UIDPLUS CHILDREN NAMESPACE THREAD=ORDEREDSUBJECT THREAD=REFERENCES SORT QUOTA IDLE",
    "IMAP_KEYWORDS": "1",
    "IMAP_ACL": "1",
    "IMAP_IDLE_TIMEOUT": "60",
    "IMAP_ENHANCEDIDLE": "0",
    "IMAP_TRASHFOLDERNAME": "Trash",
    "IMAP_EMPTYTRASH": "",
    "IMAP_MOVE_EXPUNGE_TO_TRASH": "0",
    "IMAP_USELOCKS": "1",
    "IMAP_UMASK": "022",
    "IMAP_TLS_REQUIRED": "0",
    "IMAP_STARTTLS": "NO",
    "IMAP_MAILBOX_SANITY_CHECK": "1",
    "MAILDIRPATH": "Maildir",
    "PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
}

_COURIER_LAUNCH = """\
# Generated by mailbridge.testing.servers: Courier's compiled-in paths, privately.
set -e
mount -t overlay overlay -o lowerdir={root}/usr:/usr /usr
mount -t overlay overlay -o lowerdir={root}/etc:/etc /etc
mount --bind {base}/etc /etc/courier
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/courier/authdaemon
chmod 750 /run/courier/authdaemon
/usr/lib/courier/courier-authlib/authdaemond &
exec /usr/bin/env -i {env} /usr/sbin/couriertcpd -address=127.0.0.1 -maxprocs=200 -maxperip=200 \\
    -nodnslookup -noidentlookup {port} /usr/lib/courier/courier/imaplogin /usr/bin/imapd Maildir
"""


class CourierServer(_PrivateServer):
    """A private Courier-IMAP 5.0 (Debian's packages, unpacked) under `base_dir`, run in a
    private mount namespace (root only).  Personal folders live under "INBOX." (see
    `folder`); no CONDSTORE; IMAP_ENHANCEDIDLE=0 (Debian's default)."""

    kind = "courier"
    folder_prefix = "INBOX."

    def _prepare(self) -> None:
        if os.geteuid() != 0 or shutil.which("unshare") is None:
            raise ServerPackagesError("Courier runs in a private mount namespace: needs root and unshare "
                                      "(util-linux)")
        etc = self.base_dir / "etc"
        etc.mkdir(exist_ok=True)
        (etc / "authdaemonrc").write_text(_AUTHDAEMONRC, "utf-8")
        (self.base_dir / "home").mkdir(exist_ok=True)
        os.chmod(self.base_dir / "home", 0o755)
        self._write_userdb()
        assert self.root is not None
        env = " ".join(f"{k}='{v}'" for k, v in _COURIER_ENV.items())
        self.launch_path = self.base_dir / "launch.sh"
        self.launch_path.write_text(_COURIER_LAUNCH.format(root=self.root, base=self.base_dir,
                                                           env=env, port=self.port), "utf-8")

    def _namespace(self, pid: int) -> str | None:
        try:
            mine, theirs = os.readlink("/proc/self/ns/mnt"), os.readlink(f"/proc/{pid}/ns/mnt")
        except OSError:
            return None
        return theirs if theirs != mine else None

    def _command(self) -> tuple[list[str], dict[str, str]]:
        return (["unshare", "-m", "--propagation", "private", "sh", str(self.launch_path)], dict(os.environ))

    def _write_userdb(self) -> None:
        """userdb.dat and userdbshadow.dat from self.users (as makeuserdb writes them)."""
        assert self.root is not None
        etc = self.base_dir / "etc"
        plain, shadow = [], []
        for u in self.users.values():
            plain.append(f"{u.username}\tuid={u.uid}|gid={u.gid}|home={u.home}|mail={u.maildir}|_=\n")
            digest = base64.b64encode(hashlib.sha1(u.password.encode()).digest()).decode()
            shadow.append(f"{u.username}\tsystempw={{SHA}}{digest}\n")
        makedat = str(self.root / "usr/lib/courier/courier-authlib/makedatprog")
        env = dict(os.environ, LD_LIBRARY_PATH=_library_path(self.root))
        for name, lines in (("userdb", plain), ("userdbshadow", shadow)):
            res = subprocess.run([makedat, "-", str(etc / f"{name}.tmp"), str(etc / f"{name}.dat")],
                                 input=("".join(lines) + ".\n").encode(), capture_output=True, env=env,
                                 timeout=20)
            if res.returncode != 0:
                raise ServerPackagesError(f"makedatprog {name} failed: {res.stderr.decode(errors='replace')}")
            os.chmod(etc / f"{name}.dat", 0o600)

    def _create_user(self, username: str, password: str) -> MailUser:
        home = self.base_dir / "home" / username
        maildir = home / "Maildir"
        for d in (home, maildir, maildir / "cur", maildir / "new", maildir / "tmp"):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._chown(d)
        user = MailUser(username=username, password=password, home=home, maildir=maildir,
                        uid=self._owner.pw_uid, gid=self._owner.pw_gid, separator=".")
        self.users[username] = user
        try:
            if self.root is not None:
                self._write_userdb()
        except BaseException:
            del self.users[username]
            raise
        return user


def _pids_in_namespace(namespace: str) -> list[int]:
    """Processes whose mount namespace is `namespace` (a readlink of /proc/PID/ns/mnt)."""
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{entry.name}/ns/mnt") == namespace:
                    pids.append(int(entry.name))
    return pids


def _group_name(gid: int) -> str:
    import grp

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
