# syntax=docker/dockerfile:1
# One image for every part of Emporium: `emporium serve <service>` runs a service,
# `emporium init` and `emporium seed` prepare the backends. Build from the repository root:
#   docker build -t emporium:dev .

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# --- Dependencies: cargo-chef turns the manifests into a recipe, so the layer that compiles
# every dependency is rebuilt only when Cargo.toml or Cargo.lock change, not on each edit.
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json --package emporium
COPY . .
RUN cargo build --release --locked --package emporium --bin emporium \
    && strip target/release/emporium \
    && install -D -m 0755 target/release/emporium /out/emporium

# --- Runtime: Debian slim for glibc and CA certificates (the HTTP client needs a CA bundle
# even for plain HTTP), one non-root user, nothing else.
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
ARG VERSION=dev
LABEL org.opencontainers.image.title="emporium" \
      org.opencontainers.image.description="Emporium e-commerce platform: storefront, catalog, inventory, cart and order services in one binary" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates=20230311* \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 emporium \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin emporium
COPY --from=build /out/emporium /usr/local/bin/emporium
USER 10001:10001
# Services bind every interface inside a container; embedded data (when used) goes to /data.
ENV EMPORIUM_HOST=0.0.0.0 \
    EMPORIUM_DATA_DIR=/data \
    EMPORIUM_LOG_FORMAT=json
EXPOSE 8080 8081 8082 8083 8084
ENTRYPOINT ["/usr/local/bin/emporium"]
CMD ["up"]
