# syntax=docker/dockerfile:1
#
# sipwake container image: build with the Rust toolchain, run on a slim Debian as an
# unprivileged user. Settings: /etc/sipwake/sipwake.toml (mount your own) plus
# SIPWAKE__SECTION__KEY environment overrides (see docker-compose.yml). Bindings are
# kept under /var/lib/sipwake, which is a volume so they survive container restarts.

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# Cache mounts keep the crates index and build artifacts between image builds; the
# binary is copied out because the target directory is not part of the image layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin sipwake \
    && cp target/release/sipwake /usr/local/bin/sipwake

FROM debian:bookworm-slim
RUN groupadd --system --gid 10001 sipwake \
    && useradd --system --uid 10001 --gid sipwake --home-dir /var/lib/sipwake \
       --no-create-home --shell /usr/sbin/nologin sipwake \
    && mkdir -p /etc/sipwake /var/lib/sipwake/data \
    && chown -R sipwake:sipwake /var/lib/sipwake
COPY --from=builder /usr/local/bin/sipwake /usr/local/bin/sipwake
COPY conf/sipwake.toml /etc/sipwake/sipwake.toml

# The relative default store.path (data/sipwake.db) lands inside the data volume.
WORKDIR /var/lib/sipwake
VOLUME ["/etc/sipwake", "/var/lib/sipwake"]
USER sipwake
# 5061/tcp is SIP over TLS, when tls.listen is set
EXPOSE 5060/udp 5060/tcp 5061/tcp
# SIGTERM drains the calls in progress (up to server.drain_timeout_secs, 30 s) before
# exiting: stop with `docker stop -t 45` or compose's stop_grace_period; SIGHUP reloads.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/sipwake"]
CMD ["--config", "/etc/sipwake/sipwake.toml"]
