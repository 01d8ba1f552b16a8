# One image for every process of Baedal on Kubernetes: `baedal serve order|payment|restaurant|
# delivery|notification|gateway|operator|paygate` (the chart sets the argument per Deployment).
# Build: docker build -t baedal:dev .   (skaffold dev builds it too; see docs/kubernetes.md)
# tests/chart/test_image.py lints this file with hadolint and checks the build context.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------- build: a virtualenv, no compilers
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/baedal
# The project (what .dockerignore lets in: pyproject.toml, README.md, services/). Every dependency
# ships a manylinux wheel, so nothing is compiled and the runtime stage needs no build tools.
COPY pyproject.toml README.md ./
COPY services ./services
RUN /opt/baedal/bin/pip install --no-cache-dir . \
    && /opt/baedal/bin/python -m compileall -q /opt/baedal/lib

# ---------------------------------------------------------------- runtime: the virtualenv, non-root
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="baedal" \
      org.opencontainers.image.description="Baedal food delivery: services, gateway, Restaurant operator (baedal serve PROCESS)" \
      org.opencontainers.image.licenses="Apache-2.0"
# A numeric user, so the kubelet can check runAsNonRoot; no home directory, no login shell.
RUN groupadd --system --gid 10001 baedal \
    && useradd --system --no-log-init --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin baedal
COPY --from=build /opt/baedal /opt/baedal
# The demo catalog, for `baedal up` in the image (the chart mounts its demo Restaurants instead).
COPY operator/examples /opt/baedal/examples
# Read-only root filesystem: bytecode was compiled at build time, and everything a process may write
# (the SQLite data dir of a local run, temporary files) is under /tmp, an emptyDir in the chart.
ENV PATH=/opt/baedal/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    BAEDAL_HOST=0.0.0.0 \
    BAEDAL_DATA_DIR=/tmp/baedal \
    BAEDAL_DEMO_MANIFESTS=/opt/baedal/examples
WORKDIR /tmp
USER 10001:10001
EXPOSE 8000
ENTRYPOINT ["baedal"]
CMD ["serve", "gateway"]
