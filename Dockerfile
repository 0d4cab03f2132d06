# syntax=docker/dockerfile:1
#
# Sediment container image: one static-ish binary on an empty base.
#
#   docker build -t sediment:dev .
#   docker run --rm -p 9092:9092 -p 9644:9644 -v sediment-data:/var/lib/sediment sediment:dev serve \
#       --listen 0.0.0.0:9092 --advertised-listener localhost:9092 \
#       --admin-listen 0.0.0.0:9644 --data-dir /var/lib/sediment
#
# The build stage runs exactly `cargo build --release -p sediment --locked`; CI
# checks that command (tests/deploy/run.sh) without a Docker engine. The runtime
# stage is `scratch` plus the few shared objects the binary links against, the CA
# bundle and a passwd entry for the non-root user: no shell, no package manager.
#
# Health is checked by the orchestrator on the admin port (/health, /ready); the
# image has no shell or HTTP client to run a Docker HEALTHCHECK with.
#checkov:skip=CKV_DOCKER_2:No shell or HTTP client in the image; Kubernetes probes /health and /ready on the admin port instead.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
# The whole workspace is needed: every member listed in Cargo.toml must exist
# for cargo to load the workspace (see .dockerignore for what is left out).
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release -p sediment --locked \
    && install -D -m 0755 target/release/sediment /rootfs/sediment

# Assemble the runtime root: the dynamic loader and libraries `ldd` reports
# (glibc, libgcc_s, ...), CA certificates for S3 over TLS, name-service config,
# a non-root user and writable data/cache directories.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN ldd /rootfs/sediment \
      | awk '/=>/ { print $3 } /ld-linux/ && !/=>/ { print $1 }' \
      | while read -r lib; do cp --parents -L "$lib" /rootfs/; done \
    && install -D -m 0644 /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/ca-certificates.crt \
    && printf 'hosts: files dns\n' > /rootfs/etc/nsswitch.conf \
    && printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > /rootfs/etc/passwd \
    && printf 'root:x:0:\nnonroot:x:65532:\n' > /rootfs/etc/group \
    && install -d -m 1777 /rootfs/tmp \
    && install -d -m 0750 -o 65532 -g 65532 /rootfs/home/nonroot /rootfs/var/lib/sediment /rootfs/var/cache/sediment

FROM scratch AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="sediment" \
      org.opencontainers.image.description="Kafka-compatible broker with tiered storage in S3" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=builder /rootfs/ /
# No SEDIMENT_* defaults here: environment variables outrank a --config file, and
# the Helm chart's per-broker config file must be the single source of settings.
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532:65532
WORKDIR /home/nonroot
# Kafka, Raft, admin HTTP (/health, /ready, /metrics).
EXPOSE 9092 9093 9644
ENTRYPOINT ["/sediment"]
CMD ["serve"]
