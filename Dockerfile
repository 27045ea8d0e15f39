# syntax=docker/dockerfile:1
# The StocksBlitz engine image: built in a Rust image, run from a slim Debian as a
# non-root user, configuration baked in, secrets mounted as files at run time.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Base images are pinned; apt packages follow bookworm's security updates on purpose
# (exact versions vanish from the mirror when a fix lands).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cargo build --release --locked --bin stocksblitz

FROM debian:bookworm-slim
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 stocksblitz \
    && useradd --system --uid 10001 --gid stocksblitz --home-dir /var/lib/stocksblitz --shell /usr/sbin/nologin stocksblitz \
    && mkdir -p /var/lib/stocksblitz \
    && chown stocksblitz:stocksblitz /var/lib/stocksblitz
COPY --from=build /src/target/release/stocksblitz /usr/local/bin/stocksblitz
COPY configs/prod.toml /etc/stocksblitz/prod.toml
USER 10001:10001
WORKDIR /var/lib/stocksblitz
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/stocksblitz"]
CMD ["serve", "--config", "/etc/stocksblitz/prod.toml"]
