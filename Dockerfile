# DXR Node: DIMSE + DICOMweb receiver, radiogrammetry workers, exporters, health and metrics.
#
#   docker build -t dxr-node .
#   docker run -d --init -p 11112:11112 -p 8080:8080 -v dxr-data:/data dxr-node
#
# /data   the node's data_dir (spool, SQLite, outputs, outbox, http-token): a volume.
# /config node.toml (the image ships config/docker.toml there); mount your own to replace it.
# The STOW-RS bearer token is generated into /data/http-token on first start.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/dxr-node/venv \
    NUMBA_CACHE_DIR=/opt/dxr-node/numba-cache \
    DXR_CONFIG=/config/node.toml
ENV PATH=/opt/dxr-node/venv/bin:$PATH

RUN groupadd --system --gid 10001 dxr \
 && useradd --system --uid 10001 --gid dxr --home-dir /data --no-create-home --shell /usr/sbin/nologin dxr \
 && mkdir -p /data /config /opt/dxr-node/src "$NUMBA_CACHE_DIR" \
 && chown dxr:dxr /data "$NUMBA_CACHE_DIR"

# Dependencies first, from pyproject.toml alone, so code changes reuse this layer.
COPY pyproject.toml README.md /opt/dxr-node/src/
RUN python -m venv "$VIRTUAL_ENV" \
 && python -c "import tomllib; print('\n'.join(tomllib.load(open('/opt/dxr-node/src/pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && pip install -q --upgrade pip \
 && pip install -q -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

COPY analysis /opt/dxr-node/src/analysis
COPY node /opt/dxr-node/src/node
RUN pip install -q --no-deps /opt/dxr-node/src \
 && rm -rf /opt/dxr-node/src

COPY config/reference /opt/dxr-node/reference
COPY config/docker.toml /config/node.toml

# Warm the numba cache (@njit(cache=True)) as the runtime user, so the first study is not slow
# (analysis.warmup covers every signature the workers use, a phantom study the whole path):
# one phantom through the worker's entry point analysis.analyse(dataset), and the same image
# through the measurement on the phantom's known axes (compiles every kernel even when the
# hand finder refuses). Fails the build when nothing was cached.
COPY tests/phantom.py /tmp/warmup/phantom.py
USER dxr
RUN cd /tmp/warmup \
 && python -c "import analysis; from analysis.warmup import warm_up; warm_up(); from phantom import make_hand, make_dataset, truth_location; image, truth = make_hand(seed=0); r1 = analysis.analyse(make_dataset(image, truth)); r2 = analysis.analyse_located(image, truth_location(truth), pixel_spacing_mm=truth.spacing_mm); print('numba cache warmed:', r1.status, r1.reason, '/', r2.status, r2.reason)" \
 && find "$NUMBA_CACHE_DIR" -name '*.nbi' | grep -q .
USER root
RUN rm -rf /tmp/warmup
USER dxr

WORKDIR /data
VOLUME ["/data"]
EXPOSE 11112 8080

# /healthz on the [http] port of the config in use (python's urllib: no curl in the image).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, sys, tomllib, urllib.request; http = tomllib.load(open(os.environ['DXR_CONFIG'], 'rb')).get('http', {}); urllib.request.urlopen(f\"http://127.0.0.1:{http.get('port', 8080)}/healthz\", timeout=4); sys.exit(0)"]

ENTRYPOINT ["dxr-node"]
CMD ["serve", "--config", "/config/node.toml"]
