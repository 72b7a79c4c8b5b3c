# syntax=docker/dockerfile:1
# Build stage: the same cargo command CI checks (tests/shipping.rs), without the default
# `demo` feature: the image has no `ftpfront demo` and none of libunftp.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked --no-default-features --bin ftpfront \
    && strip target/release/ftpfront

FROM debian:bookworm-slim
# Versions come from the pinned bookworm base image; pinning them here would
# break the build at every Debian point release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libcap2-bin \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin ftpfront
COPY --from=build /src/target/release/ftpfront /usr/local/bin/ftpfront
COPY config/container.toml /etc/ftpfront/ftpfront.toml
# Port 21 and 990 without root: only this one capability.
RUN setcap cap_net_bind_service=+ep /usr/local/bin/ftpfront
USER 10001:10001
# Control, implicit FTPS, the default passive range, metrics.
EXPOSE 21 990 30000-30099 9477
HEALTHCHECK --interval=30s --timeout=5s --retries=3 \
    CMD ["/usr/local/bin/ftpfront", "healthcheck", "--address", "127.0.0.1:9477"]
# ftpfront is PID 1: it handles SIGTERM/SIGINT itself (no init needed).
ENTRYPOINT ["/usr/local/bin/ftpfront"]
CMD ["run", "--config", "/etc/ftpfront/ftpfront.toml"]
