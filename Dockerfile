# One image per rosemesh service, from build arguments: SERVICE picks the service it serves and
# checks, EXTRA what it installs. The embedding service serves a published bundle with ONNX
# Runtime alone; the others need the full stack (their cores run kernels/ on torch and numba):
#   docker build --build-arg SERVICE=embedding --build-arg EXTRA=embedding -t ghcr.io/rosemesh/embedding .
#   docker build --build-arg SERVICE=experience --build-arg EXTRA=all -t ghcr.io/rosemesh/experience .
# (the Helm chart passes `serve <service>` as the container's args).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG EXTRA=all
# CPU wheels of torch; a GPU image would use the CUDA index instead.
ARG PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_EXTRA_INDEX_URL=${PIP_EXTRA_INDEX_URL}
RUN python -m venv /opt/rosemesh
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gen/python gen/python
COPY services services
COPY kernels kernels
COPY deploy/__init__.py deploy/__init__.py
COPY deploy/triton deploy/triton
RUN /opt/rosemesh/bin/pip install --upgrade pip \
 && /opt/rosemesh/bin/pip install ".[${EXTRA}]"

FROM ${PYTHON_IMAGE}
ARG SERVICE=embedding
ENV ROSEMESH_SERVICE=${SERVICE}
RUN groupadd --system --gid 10001 rosemesh \
 && useradd --system --uid 10001 --gid rosemesh --home-dir /var/cache/rosemesh --no-create-home rosemesh \
 && mkdir -p /var/cache/rosemesh /var/lib/rosemesh \
 && chown rosemesh:rosemesh /var/cache/rosemesh /var/lib/rosemesh
COPY --from=build /opt/rosemesh /opt/rosemesh
# Caches (models, tokenizers, numba's compiled kernels) go to /var/cache/rosemesh, a volume in
# Kubernetes, since the root filesystem is read-only there; the services bind every interface
# inside a container.
ENV PATH=/opt/rosemesh/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOME=/var/cache/rosemesh \
    XDG_CACHE_HOME=/var/cache/rosemesh \
    NUMBA_CACHE_DIR=/var/cache/rosemesh/numba \
    HF_HUB_OFFLINE=1
USER 10001:10001
EXPOSE 50051 50052 50053 50054 50055 9464 9465 9466 9467 9468 8088
# grpc.health.v1 on the service's own port (Kubernetes uses its gRPC probes instead).
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
  CMD ["rosemesh", "health", "--check", "rosemesh.liveness"]
ENTRYPOINT ["rosemesh"]
CMD ["serve"]
