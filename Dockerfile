# syntax=docker/dockerfile:1
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked \
    && strip target/release/ftpfront

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libcap2-bin \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --no-create-home --shell /usr/sbin/nologin ftpfront
COPY --from=build /src/target/release/ftpfront /usr/local/bin/ftpfront
COPY config/ftpfront.toml /etc/ftpfront/ftpfront.toml
# Port 21 without root: only this one capability.
RUN setcap cap_net_bind_service=+ep /usr/local/bin/ftpfront
USER ftpfront
EXPOSE 21 30000-30099 9477
ENTRYPOINT ["/usr/local/bin/ftpfront"]
CMD ["run", "--config", "/etc/ftpfront/ftpfront.toml"]
