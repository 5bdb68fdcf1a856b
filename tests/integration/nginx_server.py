"""Start a real nginx on 127.0.0.1 serving a folder, for channel tests.

The config is written into the test's tmp folder and nginx runs in the foreground
(``daemon off; master_process off``: one process, no privilege drop, killed at the end).
Tests skip when nginx is not installed, unless KIOSK_REQUIRE_NGINX=1 (CI), where a
missing nginx is a failure. Install it with ``apt-get install nginx``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 64; }}
http {{
    types {{ application/octet-stream kpack kidx kkeys; }}
    default_type application/octet-stream;
    log_format kiosk '$status $request_method $uri range=[$http_range] '
                     'inm=[$http_if_none_match] sent=$body_bytes_sent';
    access_log {prefix}/access.log kiosk;
    client_body_temp_path {prefix}/tmp-body;
    proxy_temp_path {prefix}/tmp-proxy;
    fastcgi_temp_path {prefix}/tmp-fcgi;
    uwsgi_temp_path {prefix}/tmp-uwsgi;
    scgi_temp_path {prefix}/tmp-scgi;
    sendfile off;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location /slow/ {{
            alias {root}/;
            limit_rate {slow_rate};
        }}
    }}
}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Nginx:
    def __init__(self, root: Path, prefix: Path, slow_rate: str = "64k") -> None:
        self.root, self.prefix, self.slow_rate = Path(root), Path(prefix), slow_rate
        self.port = 0
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Nginx:
        binary = shutil.which("nginx") or (
            "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None
        )
        if binary is None:
            if os.environ.get("KIOSK_REQUIRE_NGINX"):
                pytest.fail(
                    "nginx is required (KIOSK_REQUIRE_NGINX is set) but not installed: apt-get install nginx"  # noqa: E501
                )
            pytest.skip(
                "nginx is not installed (apt-get install nginx); set KIOSK_REQUIRE_NGINX=1 to make this fail"  # noqa: E501
            )
        self.prefix.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            self.port = _free_port()
            conf = self.prefix / "nginx.conf"
            conf.write_text(
                CONF.format(
                    prefix=self.prefix, port=self.port, root=self.root, slow_rate=self.slow_rate
                )
            )
            self.proc = subprocess.Popen(
                [
                    binary,
                    "-c",
                    str(conf),
                    "-p",
                    str(self.prefix),
                    "-e",
                    str(self.prefix / "error.log"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                    return self
                except OSError:
                    time.sleep(0.05)
            self.stop()
        raise RuntimeError(
            f"nginx did not start: {(self.prefix / 'error.log').read_text(errors='replace')[-2000:]}"  # noqa: E501
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def log_lines(self) -> list[str]:
        path = self.prefix / "access.log"
        return path.read_text().splitlines() if path.exists() else []
