# syntax=docker/dockerfile:1
#
# vaedft benchmark image: the paper profile of `vaedft-bench` on an NVIDIA GPU.
#
#   docker build -t vaedft-bench --build-arg VCS_REF="$(git rev-parse HEAD)" .
#   docker run --gpus all -v "$PWD/results:/results" -v vaedft-cache:/cache vaedft-bench
#
# The default command runs
#   vaedft-bench --profile paper --device cuda --out /results --cache /cache
# Any other command replaces it, e.g.
#   docker run --gpus all vaedft-bench vaedft-bench --profile quick --device cuda --out /results --cache /cache
#
# Volumes: /results receives the reports; /cache holds the datasets, trained networks and partial runs
# (keep it between runs: an interrupted benchmark resumes from it).  The container runs as the
# unprivileged user `vaedft` (uid 1000): a bind-mounted host directory must be writable by that uid
# (or run with `--user "$(id -u):$(id -g)"`).  For a Dask cluster (`--executor dask:...`) the workers
# need /cache on a shared filesystem.
#
# Base: CUDA 12.9 runtime libraries (used by CuPy) on Ubuntu 24.04, whose system Python is 3.12
# (on Ubuntu 22.04 it is 3.10, and 3.11 is not maintained there).  torch brings its own CUDA
# libraries from the official PyTorch index; the NVIDIA driver on the host must support CUDA 12
# (the base image lists the driver branches it accepts).
FROM nvidia/cuda:12.9.1-runtime-ubuntu24.04

# torch: the version CI tests (CPU build) in its CUDA 12.9 build; override both for another CUDA.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu129
ARG SOURCE_URL=https://github.com/vaedft/vaedft
ARG VCS_REF=unknown

LABEL org.opencontainers.image.title="vaedft-bench" \
      org.opencontainers.image.description="Deep-learning DFT via variational autoencoders: the paper's benchmark suite (CUDA)" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.licenses="MIT"

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# Unpinned apt packages: the Ubuntu archive keeps only the latest patch of each package, so exact
# pins break the build within weeks; the base image tag pins the release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv "$VIRTUAL_ENV"

# torch first, from the CUDA index, so that `pip install .` finds it satisfied and never pulls the
# PyPI build.  A separate layer: it is by far the largest and changes least often.
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

WORKDIR /opt/vaedft

# Only what the benchmark needs: the package (with its resources, e.g. the Snyder 2012 test-potential
# table in vaedft/data/resources) and the suite definitions in benchmark/ (experiments, profiles,
# reference values).  Datasets are generated into /cache at run time.
COPY pyproject.toml README.md ./
COPY vaedft/ vaedft/
COPY benchmark/ benchmark/

# The harness finds its suite definitions through VAEDFT_BENCHMARK_DIR and its cache through
# VAEDFT_CACHE (also passed explicitly by the default command).
ENV VAEDFT_BENCHMARK_DIR=/opt/vaedft/benchmark \
    VAEDFT_CACHE=/cache

# DL3013 (pin versions in pip) does not apply: this installs the local project, whose dependency ranges
# live in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[gpu,dist]" \
    && python -c "import torch, vaedft; print('vaedft', vaedft.__file__, 'torch', torch.__version__, torch.version.cuda)"

# Ubuntu 24.04 images carry a user `ubuntu` with uid 1000: replace it by `vaedft`.
RUN if id ubuntu >/dev/null 2>&1; then userdel ubuntu && rm -rf /home/ubuntu; fi \
    && useradd --create-home --uid 1000 --shell /bin/bash vaedft \
    && mkdir -p /results /cache \
    && chown vaedft:vaedft /results /cache
# Numeric, so that the host (and e.g. Kubernetes runAsNonRoot) can check it is not root.
USER 1000:1000

VOLUME ["/results", "/cache"]

CMD ["vaedft-bench", "--profile", "paper", "--device", "cuda", "--out", "/results", "--cache", "/cache"]
