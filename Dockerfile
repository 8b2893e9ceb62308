# One image for the API and the GPU worker.
#   API (default):  docker run -p 8000:8000 parla
#   worker:         docker run --gpus 1 -v /srv/weights:/weights:ro parla python -m worker
# Weights are never baked in: mount them read-only at /weights (PARLA_WEIGHTS_DIR).
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04

# --- base: Python 3.11 and the shared libraries OpenCV/MediaPipe load ------------------------------
FROM ${CUDA_IMAGE} AS base
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Ubuntu 22.04 ships only a 3.11 release candidate; deadsnakes has the real 3.11.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates gpg-agent software-properties-common \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv libgl1 libglib2.0-0 \
 && apt-get purge -y software-properties-common gpg-agent \
 && apt-get autoremove -y \
 && rm -rf /var/lib/apt/lists/*

# --- build: a virtualenv with CUDA torch, then every other dependency from requirements.lock ------
FROM base AS build
ARG TORCH_VERSION=2.13.0
# The CUDA wheel index: the CPU wheel used on laptops/CI would give a torch without CUDA.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, with its dependencies: a CUDA torch brings its own nvidia-* and triton wheels, pinned
# exactly by its metadata (the lock, made against the CPU wheel, has none of them).
RUN pip install --no-cache-dir --disable-pip-version-check --index-url ${TORCH_INDEX_URL} torch==${TORCH_VERSION}
# Then the lock: hashes checked, nothing resolved, so the image gets the versions that CI tested
# (dev tools included: one lock for everything). `pip check` proves that this torch agrees with them.
# Dependencies before sources, so that a code change does not reinstall them.
COPY requirements.lock /src/requirements.lock
RUN pip install --no-cache-dir --disable-pip-version-check --require-hashes --no-deps -r /src/requirements.lock \
 && pip check \
 && python -c "import torch; assert torch.version.cuda, 'torch was installed without CUDA'"
COPY . /src
# --no-build-isolation: build with the locked setuptools instead of fetching an unpinned one.
RUN pip install --no-cache-dir --disable-pip-version-check --no-deps --no-build-isolation /src

# --- runtime --------------------------------------------------------------------------------------
FROM base AS runtime
COPY --from=build /opt/venv /opt/venv
COPY deploy/healthcheck.py deploy/create_bucket.py /app/
RUN useradd --create-home --uid 10001 --user-group parla \
 && mkdir -p /weights /app/var \
 && chown parla:parla /app/var
ENV PATH=/opt/venv/bin:$PATH \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    PARLA_WEIGHTS_DIR=/weights \
    PARLA_HOST=0.0.0.0 \
    PARLA_PORT=8000 \
    PARLA_WORKER_METRICS_PORT=9100
WORKDIR /app
USER parla
EXPOSE 8000 9100
# The API's liveness; the worker overrides the URL with its metrics port (see docker-compose.yml).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/app/healthcheck.py"]
CMD ["python", "-m", "service"]
