# MambaQuant Serve: one image with mq-server, mq-worker, mqctl, mq-engine and the CUDA backend
# plugin libmq_cuda_backend.so. The same image serves CPU workers (--backend=cpu) and GPU workers
# (--backend=cuda, on a node with the NVIDIA container toolkit).
#
#   docker build -t REGISTRY/mambaquant-serve:VERSION .
#
# The code builds against Debian 12's gRPC 1.51, protobuf 3.21, Abseil 20220623, prometheus-cpp
# and SQLite, and NVIDIA publishes no Debian CUDA images, so the "CUDA devel" and "CUDA runtime"
# stages are Debian 12 with the CUDA toolkit (devel) or only the CUDA libraries the plugin loads
# (runtime) from NVIDIA's Debian 12 repository. Stages:
#   cuda-devel   Debian 12 + nvcc, CUDA headers and libraries + the project's -dev packages
#   build        compiles everything (-DMQ_CUDA=ON), no tests
#   runtime      Debian 12 slim + CUDA runtime libraries + the project's runtime packages; a
#                step runs ldd on every binary and fails on any "not found".
# deploy/validate.sh lints this file in CI.

ARG DEBIAN_IMAGE=debian:12
ARG DEBIAN_SLIM_IMAGE=debian:12-slim
# CUDA 13.0 (the toolkit the project is developed with); the NVIDIA driver on the nodes must
# support it.
ARG CUDA_PKG_VERSION=13-0
ARG CUDA_KEYRING_URL=https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/cuda-keyring_1.1-1_all.deb
# GPU architectures compiled into the plugin (H100: 90; A100: 80; L4/L40: 89).
ARG CUDA_ARCHITECTURES=80;89;90

# ---- CUDA devel: Debian 12 + the CUDA toolkit's compiler and libraries ----
FROM ${DEBIAN_IMAGE} AS cuda-devel
ARG CUDA_PKG_VERSION
ARG CUDA_KEYRING_URL
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && curl -fsSL -o /tmp/cuda-keyring.deb "${CUDA_KEYRING_URL}" \
    && dpkg -i /tmp/cuda-keyring.deb && rm /tmp/cuda-keyring.deb \
    && apt-get update \
    && apt-get install -y --no-install-recommends \
      "cuda-nvcc-${CUDA_PKG_VERSION}" "cuda-cudart-dev-${CUDA_PKG_VERSION}" \
      "libcublas-dev-${CUDA_PKG_VERSION}" "libcusolver-dev-${CUDA_PKG_VERSION}" \
      build-essential cmake ninja-build pkg-config \
      libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev \
      prometheus-cpp-dev libsqlite3-dev libssl-dev libgtest-dev libgmock-dev \
      nlohmann-json3-dev libeigen3-dev libopenblas-dev libicu-dev libpcre2-dev \
    && rm -rf /var/lib/apt/lists/*
ENV PATH=/usr/local/cuda/bin:${PATH}

# ---- build ----
FROM cuda-devel AS build
ARG CUDA_ARCHITECTURES
WORKDIR /src
COPY CMakeLists.txt ./
COPY cmake cmake
COPY proto proto
COPY common common
COPY server server
COPY worker worker
COPY client client
COPY bench bench
COPY tests tests
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DMQ_CUDA=ON -DMQ_BUILD_TESTS=OFF \
      "-DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHITECTURES}" \
    && cmake --build /build --target mq-server mq-worker mqctl mq-engine mq_cuda_backend \
    && mkdir -p /out/bin /out/lib \
    && cp /build/server/mq-server /build/worker/mq-worker /build/client/mqctl /build/worker/engine/mq-engine /out/bin/ \
    && cp "$(find /build -name libmq_cuda_backend.so -print -quit)" /out/lib/ \
    && strip /out/bin/* && strip --strip-unneeded /out/lib/libmq_cuda_backend.so

# ---- runtime: Debian 12 slim + the CUDA runtime libraries ----
FROM ${DEBIAN_SLIM_IMAGE} AS runtime
ARG CUDA_PKG_VERSION
ARG CUDA_KEYRING_URL
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && curl -fsSL -o /tmp/cuda-keyring.deb "${CUDA_KEYRING_URL}" \
    && dpkg -i /tmp/cuda-keyring.deb && rm /tmp/cuda-keyring.deb \
    && apt-get update \
    && apt-get install -y --no-install-recommends \
      "cuda-cudart-${CUDA_PKG_VERSION}" "libcublas-${CUDA_PKG_VERSION}" "libcusolver-${CUDA_PKG_VERSION}" \
      libgrpc++1.51 libgrpc29 libprotobuf32 libabsl20220623 \
      libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 \
      libsqlite3-0 libssl3 libopenblas0-pthread libicu72 libpcre2-8-0 \
    && apt-get purge -y curl && apt-get autoremove -y \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 mq && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin mq
COPY --from=build /out/bin/ /usr/local/bin/
# mq-worker finds the plugin in ../lib/ next to its own directory.
COPY --from=build /out/lib/libmq_cuda_backend.so /usr/local/lib/
COPY models /opt/mambaquant/models
# Every binary and the plugin must resolve all their libraries here (libcuda.so.1, the driver, is
# not linked: the plugin's CUDA runtime opens it when a GPU is there).
RUN ldconfig \
    && missing=$(for f in /usr/local/bin/mq-server /usr/local/bin/mq-worker /usr/local/bin/mqctl \
                          /usr/local/bin/mq-engine /usr/local/lib/libmq_cuda_backend.so; do \
                   ldd "$f" | sed "s|^|$f: |" | grep "not found" || true; done) \
    && if [ -n "$missing" ]; then echo "unresolved libraries:"; echo "$missing"; exit 1; fi
ENV NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 10001:10001
WORKDIR /tmp
EXPOSE 7070 7071 7072 9090 9091
CMD ["mq-server", "--help"]
