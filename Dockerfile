# syntax=docker/dockerfile:1
#
# pyproxy in a container.
#
#   docker build -t pyproxy .
#   docker run -d --name pyproxy -p 8080:8080 -v pyproxy-data:/data pyproxy
#   docker exec -it pyproxy pyproxy user add alice
#   docker exec pyproxy pyproxy token create alice
#
# Configuration: PYPROXY_<SECTION>_<KEY> environment variables (e.g. -e PYPROXY_SERVER_WORKERS=4,
# -e PYPROXY_UPSTREAM_URL=https://mirror.example.com/simple/, -e PYPROXY_UPSTREAM_URL= for private
# packages only), or mount a file and pass --config:
#   docker run ... -v ./pyproxy.toml:/etc/pyproxy/pyproxy.toml:ro pyproxy \
#       pyproxy serve --config /etc/pyproxy/pyproxy.toml
# Environment variables override the file; data_dir stays /data through the ENV below.

# ---- build: a wheel of pyproxy plus wheels of all its dependencies ----
FROM python:3.11-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /src
COPY . .
RUN pip wheel --wheel-dir /wheels .

# ---- runtime: the wheels installed into a slim image, no build tools ----
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYPROXY_SERVER_DATA_DIR=/data \
    PYPROXY_SERVER_HOST=0.0.0.0

RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels pyproxy \
 && groupadd --system --gid 10001 pyproxy \
 && useradd --system --uid 10001 --gid pyproxy --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin pyproxy \
 && install -d -o pyproxy -g pyproxy -m 0750 /data

USER pyproxy
WORKDIR /data
VOLUME /data
EXPOSE 8080

# The slim image has no curl: ask the server itself with the standard library. urlopen raises
# on a refused connection or an HTTP error status, so the check fails then. HEAD runs the same
# handler as GET but skips sending the (possibly large) project list.
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen(u.Request('http://127.0.0.1:8080/simple/', method='HEAD'), timeout=8)"]

# SIGTERM (docker stop) lets requests in flight finish; give it more than pyproxy's 30 s grace
STOPSIGNAL SIGTERM
CMD ["pyproxy", "serve"]
