"""No secret is ever printed: a real run of the shim (two processes, logs at debug level) with a
Redis that requires a password (holding '/', '+' and '=', given as cache.redis_password), a purge
token read from a file, and backends with HTTP Basic credentials in front of an nginx that
requires them, with errors provoked (a wrong token, a purge of an identifier holding a secret,
Redis down then up, an upstream 401, a redirect elsewhere, a bad reload); every output is
searched for each secret value. A second run, where the same values are no secrets, shows that
the same search finds them (so the first can fail)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support import (
    ROOT,
    Process,
    Response,
    free_port,
    log_lines,
    need_tool,
    nginx_main,
    request,
    start_shim,
    wait_until,
    write_config,
)

TOKEN = "purge-token-3b9f1d0c7a5e42d8"
REDIS_PASSWORD = "redis-pw/c41e+6f0a=9b27"  # as `openssl rand -base64` makes them: no encoding
UPSTREAM_PASSWORD = "upstream-pw-7f3a2c9e15"
WRONG_PASSWORD = "wrong-pw-0d8e4b6a73"
USER = "iiif"
SECRETS = {
    "purge token": TOKEN,
    "Redis password": REDIS_PASSWORD,
    "upstream password": UPSTREAM_PASSWORD,
    "wrong upstream password": WRONG_PASSWORD,
    # what the Authorization header carries
    "Basic credentials": base64.b64encode(f"{USER}:{UPSTREAM_PASSWORD}".encode()).decode(),
    "wrong Basic credentials": base64.b64encode(f"{USER}:{WRONG_PASSWORD}".encode()).decode(),
}


def leaks(outputs: dict[str, str]) -> list[str]:
    """Each (output, secret) pair where the secret is found."""
    return [
        f"{secret} in {where}"
        for where, text in outputs.items()
        for secret, value in SECRETS.items()
        if value in text
    ]


def start_redis(workdir: Path, port: int) -> Process:
    """A real redis-server on 127.0.0.1 that requires ``REDIS_PASSWORD``."""
    binary = need_tool("redis-server", "/usr/bin/redis-server")
    workdir.mkdir(parents=True, exist_ok=True)
    args = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
    args += ["--appendonly", "no", "--requirepass", REDIS_PASSWORD, "--dir", str(workdir)]
    return Process(args, port, workdir / f"redis-{port}-{len(list(workdir.iterdir()))}.log")


def start_upstream(images: Path, workdir: Path) -> tuple[Process, int]:
    """nginx in front of the test images at /files/new/, which requires HTTP Basic
    credentials (an htpasswd made here); /files/old/X redirects to /files/new/X (the same
    origin), /files/away/X to another origin, where a second server logs every request with
    its Authorization header. Returns the process and the other origin's port."""
    nginx = need_tool("nginx", "/usr/sbin/nginx")
    workdir.mkdir(parents=True, exist_ok=True)
    digest = base64.b64encode(hashlib.sha1(UPSTREAM_PASSWORD.encode()).digest()).decode()
    (workdir / "htpasswd").write_text(f"{USER}:{{SHA}}{digest}\n")
    (workdir / "catalogue").mkdir()
    (workdir / "catalogue" / "objects.csv").write_text("obj,img\nquad,new/quad.png\n")
    port, other = free_port(), free_port()
    conf = nginx_main(
        workdir,
        f"""    log_format seen '$server_port $request $status '
                    'user=[$remote_user] auth=[$http_authorization]';
    access_log {workdir}/access.log seen;
    types {{ image/png png; image/jpeg jpg; }}
    server {{
        listen 127.0.0.1:{port};
        location /files/new/ {{
            auth_basic "masters";
            auth_basic_user_file {workdir}/htpasswd;
            alias {images}/;
        }}
        location ~ ^/files/old/(.*)$ {{ return 301 /files/new/$1; }}
        location ~ ^/files/away/(.*)$ {{ return 302 http://127.0.0.1:{other}/files/new/$1; }}
        location /catalogue/ {{
            auth_basic "catalogue";
            auth_basic_user_file {workdir}/htpasswd;
            alias {workdir}/catalogue/;
        }}
        location / {{ return 200 "ok"; }}
    }}
    server {{
        listen 127.0.0.1:{other};
        location / {{ return 200 "elsewhere"; }}
    }}
""",
        connections=64,
    )
    process = Process([nginx, "-c", str(conf), "-p", str(workdir)], port, workdir / "out.log")
    return process, other


CONFIG = """
server:
  processes: 2
cache:
  redis: "redis://127.0.0.1:{redis_port}/0"
  redis_password: "${{REDIS_PASSWORD}}"
  redis_retry: 0.2
  purge_token_file: secrets/purge_token
backends:
  secure:
    type: http
    url: "http://127.0.0.1:{upstream}/files/{{id}}"
    username: {user}
    password: "${{UPSTREAM_PASSWORD}}"
  wrong:
    type: http
    url: "http://127.0.0.1:{upstream}/files/{{id}}"
    username: {user}
    password_file: secrets/wrong
presentation:
  sources:
    cat:
      type: csv
      path: "http://127.0.0.1:{upstream}/catalogue/objects.csv"
      columns: {{object: obj, image: img}}
      username: {user}
      password: "${{UPSTREAM_PASSWORD}}"
routes:
  - {{match: "^w:(?P<rest>[a-z]+/[a-z.]+)$", backend: wrong, id: "{{rest}}"}}
  - {{match: "^[a-z]+/[a-z.]+$", backend: secure}}
  - {{match: "^any:", backend: secure}}
"""


@dataclass
class Run:
    """Everything a run wrote or answered, by where it came from."""

    outputs: dict[str, str] = field(default_factory=dict)
    answers: dict[str, Response] = field(default_factory=dict)

    def ask(self, port: int, path: str, **kwargs: object) -> Response:
        resp = request(port, path, **kwargs)  # type: ignore[arg-type]
        self.answers[f"{kwargs.get('method', 'GET')} {path}"] = resp
        heads = "".join(f"{k}: {v}\n" for k, v in resp.headers.items())
        self.outputs[f"answer to {path}"] = f"{resp.status}\n{heads}\n{resp.text}"
        return resp


def check_config(config: Path, env: dict[str, str], run: Run, label: str) -> None:
    for args in ((), ("--format", "json")):
        done = subprocess.run(
            [sys.executable, "-m", "iiif_shim", "check-config", str(config), *args],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, **env},
            cwd=ROOT,
        )
        run.outputs[f"check-config {' '.join(args) or 'text'} of the {label} file"] = (
            done.stdout + done.stderr
        )


@pytest.fixture(scope="module")
def secret_run(images: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("secrets")
    run = Run()
    upstream, other = start_upstream(images, tmp / "upstream")
    redis_port = free_port()
    redis = start_redis(tmp / "redis", redis_port)
    secrets = tmp / "secrets"
    secrets.mkdir()
    (secrets / "purge_token").write_text(TOKEN + "\n")
    (secrets / "wrong").write_text(WRONG_PASSWORD + "\n")
    text = CONFIG.format(redis_port=redis_port, upstream=upstream.port, user=USER)
    config = write_config(tmp / "shim.yaml", text)
    env = {"REDIS_PASSWORD": REDIS_PASSWORD, "UPSTREAM_PASSWORD": UPSTREAM_PASSWORD}
    shim = start_shim(config, tmp, "--processes", "2", "--log-level", "debug", env=env)
    try:
        port = shim.port
        wait_until(lambda: request(port, "/health/ready").status == 200, "ready")
        # credentials sent to the upstream's origin, kept on a redirect within it
        for ident in ("new%2Fquad.png", "old%2Fquad.png"):
            resp = run.ask(port, f"/iiif/3/{ident}/full/60,/0/default.jpg")
            assert resp.status == 200, (ident, resp.text)
        seen = log_lines(tmp / "upstream" / "access.log", "quad.png HTTP/1.1 200", count=2)
        assert all(f"user=[{USER}]" in line for line in seen), seen
        # the hop after the redirect (/files/old%2F... answered 301) had them too
        assert any("GET /files/new/quad.png " in line for line in seen), seen
        # and to a remote object source's catalogue
        resp = run.ask(port, "/iiif/presentation/3/quad/manifest")
        assert resp.status == 200, resp.text
        log_lines(tmp / "upstream" / "access.log", f"objects.csv HTTP/1.1 200 user=[{USER}]")
        # never on a redirect to another origin: refused, and nothing reaches it
        resp = run.ask(port, "/iiif/3/away%2Fquad.png/info.json")
        assert resp.status == 502 and "redirected outside" in resp.text, resp.text
        upstream_log = (tmp / "upstream" / "access.log").read_text()
        assert f"{other} " not in upstream_log
        # an upstream 401 (the wrong password)
        resp = run.ask(port, "/iiif/3/w:new%2Fquad.png/info.json")
        assert resp.status == 502 and "HTTP 401" in resp.text, resp.text
        log_lines(tmp / "upstream" / "access.log", "quad.png HTTP/1.1 401")
        # a client that sends a secret in its request: the access log shows ***
        run.ask(port, f"/iiif/3/{TOKEN}/info.json")
        # the purge endpoint: a wrong token, then the right one
        resp = run.ask(
            port, "/admin/cache", method="DELETE", headers={"Authorization": "Bearer wrong"}
        )
        assert resp.status == 401
        resp = run.ask(
            port, "/admin/cache", method="DELETE", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert resp.status == 200, resp.text
        # the purge report of an identifier that holds a secret (a client's mistake)
        resp = run.ask(
            port,
            f"/admin/cache/any:{UPSTREAM_PASSWORD}",
            method="DELETE",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert resp.status == 200 and json.loads(resp.body)["purged"] == "any:***", resp.text
        # Redis down, then up again (same port, same password)
        redis.stop()
        run.outputs["redis (first)"] = redis.log.read_text()
        run.ask(port, "/iiif/3/new%2Fquad.png/full/40,/0/default.jpg")
        log_lines(shim.log, "the cache goes without it")
        redis = start_redis(tmp / "redis", redis_port)
        wait_until(
            lambda: (
                run.ask(port, "/iiif/3/new%2Fquad.png/full/30,/0/default.jpg").status == 200
                and "answers again" in shim.log.read_text()
            ),
            "Redis used again",
        )
        for path in ("/health", "/health/ready", "/metrics"):
            run.ask(port, path)
        # a bad reload: the file now has a problem that quotes a secret
        config.write_text(text + f"  - {{backend: {UPSTREAM_PASSWORD}}}\n")
        os.kill(shim.proc.pid, signal.SIGHUP)
        log_lines(shim.log, "reload refused")
        check_config(config, env, run, "bad")
        config.write_text(text)
        check_config(config, env, run, "good")
    finally:
        shim.stop()
        redis.stop()
        upstream.stop()
    run.outputs["shim's stdout and stderr"] = shim.log.read_text()
    run.outputs["redis"] = redis.log.read_text()
    yield run


def test_no_output_of_a_run_shows_a_secret(secret_run: Run) -> None:
    assert leaks(secret_run.outputs) == []
    log = secret_run.outputs["shim's stdout and stderr"]
    # the secrets went through these outputs, as ***
    assert "/iiif/3/***/info.json" in log
    assert "no backend named '***'" in log  # the refused reload's problem
    assert (
        "routes[3].backend: no backend named '***'"
        in (secret_run.outputs["check-config text of the bad file"])
    )
    good = secret_run.outputs["check-config text of the good file"]
    assert "presentation source cat (csv): 1 object read" in good
    # the run went as it should: debug lines, every provoked error
    assert " DEBUG " in log
    for said in ("the cache goes without it", "answers again", "reload refused"):
        assert said in log, said


def test_health_and_metrics_show_no_secret(secret_run: Run) -> None:
    health = json.loads(secret_run.answers["GET /health"].body)
    assert health["status"] == "ok"
    assert secret_run.answers["GET /health/ready"].status == 200
    metrics = secret_run.answers["GET /metrics"].text
    assert "iiif_shim_redis_errors_total" in metrics
    assert leaks({k: v for k, v in secret_run.outputs.items() if k.startswith("answer")}) == []


def test_the_same_values_no_secrets_are_found(images: Path, tmp_path: Path) -> None:
    """The control: where the values are no secrets (a route's match, a request's path, a
    backend's name in a problem), the same outputs show them, and the search finds them."""
    run = Run()
    (tmp_path / "images").symlink_to(images)
    text = f"""
        backends:
          local: {{type: files, root: ./images}}
        routes:
          - {{match: "^{TOKEN}$", backend: local}}
          - {{backend: local}}
    """
    config = write_config(tmp_path / "shim.yaml", text)
    text = config.read_text()
    shim = start_shim(config, tmp_path, "--processes", "2", "--log-level", "debug")
    try:
        run.ask(shim.port, f"/iiif/3/{REDIS_PASSWORD}/info.json")
        log_lines(shim.log, REDIS_PASSWORD)
        config.write_text(config.read_text() + f"  - {{backend: {UPSTREAM_PASSWORD}}}\n")
        os.kill(shim.proc.pid, signal.SIGHUP)
        log_lines(shim.log, "reload refused")
        check_config(config, {}, run, "bad")
        config.write_text(text)
        check_config(config, {}, run, "good")
    finally:
        shim.stop()
    run.outputs["shim's stdout and stderr"] = shim.log.read_text()
    found = leaks(run.outputs)
    assert "Redis password in shim's stdout and stderr" in found
    assert "upstream password in shim's stdout and stderr" in found
    assert "upstream password in check-config text of the bad file" in found
    assert "upstream password in check-config --format json of the bad file" in found
    assert "purge token in check-config text of the good file" in found
