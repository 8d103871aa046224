# hookflow: multi-stage image. The build stage runs the same dependency script and CMake build
# that CI exercises; the runtime stage carries only the runtime libraries and the executables.
# Tag it with the release (hookflow:0.1.0, the project version), never :latest: the manifests in
# deploy/ pin that tag. .dockerignore keeps build trees, .hookflow (local secrets, PostgreSQL
# data) and deploy/compose's secret files out of the build context.
FROM debian:12 AS build
WORKDIR /src
# The dependency layer first: it is rebuilt only when the script changes, not on every source edit.
COPY deploy/local/install-deps.sh deploy/local/install-deps.sh
RUN bash deploy/local/install-deps.sh
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHOOKFLOW_TESTS=OFF \
 && cmake --build /build -j"$(nproc)"

FROM debian:12-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libevent-2.1-7 libevent-pthreads-2.1-7 librdkafka1 \
      libpq5 libyajl2 libcurl4 libssl3 libjemalloc2 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 hookflow \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin hookflow
COPY --from=build /build/hookflow-ingest /build/hookflow-engine /build/hookflow-devbroker /usr/local/bin/
COPY --from=build /src/schemas /usr/share/hookflow/schemas
ENV HOOKFLOW_CATALOG_DIR=/usr/share/hookflow/schemas/catalog \
    HOOKFLOW_MIGRATIONS_DIR=/usr/share/hookflow/schemas/migrations \
    HOOKFLOW_SECRETS_DIR=/run/secrets/hookflow \
    HOOKFLOW_LOG_FORMAT=json
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
# ingest, the Engine API (`serve`), a worker's /healthz /readyz /metrics (`work`)
EXPOSE 8080 8081 8082
ENTRYPOINT ["/usr/local/bin/hookflow-ingest"]
