# opsbot: one binary, one data directory.
# Build:  docker build -t opsbot .
# Demo console:  docker run -it --rm opsbot
# Slack:  docker run --rm -p 3000:3000 -e SLACK_SIGNING_SECRET -e SLACK_BOT_TOKEN \
#           -v $PWD/config:/etc/opsbot:ro -v opsbot-data:/var/lib/opsbot \
#           opsbot serve --config /etc/opsbot/opsbot.toml

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# The patched sled ([patch.crates-io]) and the chart's font (include_bytes!).
COPY vendor ./vendor
COPY assets ./assets
COPY src ./src
COPY benches ./benches
COPY tests ./tests
RUN cargo build --release --locked --bin opsbot

FROM debian:bookworm-slim
# CA certificates for TLS to Slack, AWS and Kubernetes (rustls reads the
# system store); nothing else: no compiler, no package caches.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/opsbot --shell /usr/sbin/nologin opsbot \
    && mkdir -p /var/lib/opsbot && chown opsbot /var/lib/opsbot
COPY --from=build /src/target/release/opsbot /usr/local/bin/opsbot
COPY commands /opt/opsbot/commands
COPY config /opt/opsbot/config
USER opsbot
WORKDIR /var/lib/opsbot
# The store lives in this volume; sled locks it, so run one opsbot per volume.
ENV OPSBOT_DATA_DIR=/var/lib/opsbot/data OPSBOT_CONFIG=/opt/opsbot/config/demo.toml
VOLUME ["/var/lib/opsbot"]
EXPOSE 3000
ENTRYPOINT ["opsbot"]
CMD ["console"]
