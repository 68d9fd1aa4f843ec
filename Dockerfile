# MambaQuant Serve: mq-server, mq-worker, mqctl and mq-engine in one image (CPU backend).
# Build:  docker build -t mambaquant-serve .
# For GPU workers build the worker on a CUDA base image with -DMQ_CUDA=ON (see docs/deploy.md).

# ---- build ----
FROM debian:12 AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
      build-essential cmake ninja-build pkg-config \
      libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev \
      prometheus-cpp-dev libsqlite3-dev libssl-dev libgtest-dev \
      nlohmann-json3-dev libeigen3-dev libopenblas-dev libicu-dev libpcre2-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY cmake cmake
COPY proto proto
COPY common common
COPY server server
COPY worker worker
COPY client client
COPY tests tests
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DMQ_CUDA=OFF -DMQ_BUILD_TESTS=OFF \
    && cmake --build /build --target mq-server mq-worker mqctl mq-engine \
    && strip /build/server/mq-server /build/worker/mq-worker /build/client/mqctl /build/worker/engine/mq-engine

# ---- runtime ----
FROM debian:12-slim
RUN apt-get update && apt-get install -y --no-install-recommends \
      libgrpc++1.51 libprotobuf32 libabsl20220623 libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 \
      libsqlite3-0 libssl3 libopenblas0-pthread libicu72 libpcre2-8-0 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --create-home mq
COPY --from=build /build/server/mq-server /build/worker/mq-worker /build/client/mqctl /build/worker/engine/mq-engine /usr/local/bin/
COPY models /opt/mambaquant/models
USER mq
WORKDIR /home/mq
EXPOSE 7070 7071 9090 9091
ENTRYPOINT []
CMD ["mq-server", "--help"]
