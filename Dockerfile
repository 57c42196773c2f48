# pyproxy in a container.
#
#   docker build -t pyproxy .
#   docker run -d --name pyproxy -p 127.0.0.1:8080:8080 -v pyproxy-data:/data pyproxy
#   docker exec -it pyproxy pyproxy user add alice
#   docker exec pyproxy pyproxy token create alice
#
# Configuration: PYPROXY_<SECTION>_<KEY> environment variables, e.g.
#   -e PYPROXY_SERVER_WORKERS=4 -e PYPROXY_UPSTREAM_URL=https://mirror.example.com/simple/
#   -e PYPROXY_UPSTREAM_URL=          (private packages only)
#   -e PYPROXY_SERVER_TRUST_FORWARDED=true   (behind a reverse proxy, see config/nginx.conf)
# or a file mounted over the (empty) default one:
#   -v ./pyproxy.toml:/etc/pyproxy/pyproxy.toml:ro
# Environment variables override the file. The data directory is always /data and the server
# always listens on 0.0.0.0:8080 inside the container (ENV and CMD below).
#
# Stopping: `docker stop` sends SIGTERM; pyproxy refuses new connections, lets downloads and
# uploads in flight finish for up to [server] shutdown_grace (30 s), then exits 0. docker's own
# default is to SIGKILL after 10 s, so give it more: `docker stop --time 40 pyproxy` (or
# `stop_grace_period: 40s` in compose).
#
# Both stages must use the same Python image: the virtual environment built in the first one is
# copied as is into the second. Override it with --build-arg PYTHON_IMAGE=... (e.g. a mirror).
ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: a wheel of pyproxy, installed with its dependencies into /opt/pyproxy ----
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python3 -m venv /opt/pyproxy
WORKDIR /src
COPY pyproject.toml README.md ./
COPY pyproxy ./pyproxy
# pip compiles the .pyc files here, as root: the runtime user could not write them later.
# setuptools (which venv adds) is not needed at run time.
RUN /opt/pyproxy/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/pyproxy/bin/pip install /wheels/pyproxy-*.whl \
 && /opt/pyproxy/bin/pip uninstall --yes setuptools

# ---- runtime: the virtual environment alone in a slim image, no build tools ----
FROM ${PYTHON_IMAGE}

ENV PATH=/opt/pyproxy/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYPROXY_CONFIG=/etc/pyproxy/pyproxy.toml \
    PYPROXY_SERVER_DATA_DIR=/data

COPY --from=builder /opt/pyproxy /opt/pyproxy

RUN groupadd --system --gid 10001 pyproxy \
 && useradd --system --uid 10001 --gid pyproxy --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin pyproxy \
 && install -d -o pyproxy -g pyproxy -m 0750 /data \
 && install -d -m 0755 /etc/pyproxy \
 && printf '%s\n' \
        '# Mount your own pyproxy.toml here (-v ./pyproxy.toml:/etc/pyproxy/pyproxy.toml:ro).' \
        '# Empty: the built-in defaults and PYPROXY_* environment variables apply.' \
        > /etc/pyproxy/pyproxy.toml

USER pyproxy:pyproxy
WORKDIR /data
VOLUME /data
EXPOSE 8080

# The slim image has no curl: ask /health with the standard library. urlopen raises on a
# refused connection or an error status, which fails the check.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/health' % (os.environ.get('PYPROXY_SERVER_PORT') or 8080), timeout=4)"]

STOPSIGNAL SIGTERM
CMD ["pyproxy", "serve", "--host", "0.0.0.0"]
