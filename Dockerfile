# zhongtai's container image: the one `zt` binary on a slim Debian, as a non-root user.
#
#   docker build -t registry.example.com/zhongtai/zt:0.1.0 .
#   docker run --rm registry.example.com/zhongtai/zt:0.1.0 --help
#
# Every component is a subcommand: the Helm chart (deploy/helm/zhongtai) runs
# `zt --config /etc/zhongtai/zhongtai.toml ingest|sink|migrate|topics create`.
# The ClickHouse DDL and the default configuration are built into the binary, so the image
# needs nothing else. See docs/deploy.md.

# --- build --------------------------------------------------------------------------------
FROM rust:1-bookworm AS build

# librdkafka (built from source by rdkafka-sys) links the system OpenSSL and zlib.
RUN apt-get update \
    && apt-get install -y --no-install-recommends pkg-config libssl-dev zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .
RUN cargo build --release --locked -p zt-cli \
    && install -D -m 0755 target/release/zt /out/zt

# --- runtime ------------------------------------------------------------------------------
FROM debian:bookworm-slim

# libssl3 and ca-certificates for TLS to Kafka and ClickHouse; zlib and libgcc come with
# the base image.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 65532 zhongtai \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin zhongtai

COPY --from=build /out/zt /usr/local/bin/zt

# Numeric, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 65532:65532
# 8080: ingest's public API; 9464: /metrics, /livez, /readyz of every long-running component.
EXPOSE 8080 9464
ENTRYPOINT ["zt"]
CMD ["--help"]
