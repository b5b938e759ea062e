# opsbot: one static-ish binary, one data directory.
# Build:  docker build -t opsbot .
# Run the demo console:  docker run -it --rm opsbot
# Run with your config:  docker run -it --rm -v $PWD/config:/etc/opsbot:ro -v opsbot-data:/var/lib/opsbot \
#                          opsbot console --config /etc/opsbot/opsbot.toml

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches && echo 'fn main() {}' > src/main.rs && touch src/lib.rs && echo 'fn main() {}' > benches/core.rs \
    && cargo build --release --locked --bin opsbot || true
COPY src ./src
COPY benches ./benches
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin opsbot

FROM debian:bookworm-slim
# No compiler, no package manager cache, no shell tools beyond the base image.
RUN useradd --system --uid 10001 --home-dir /var/lib/opsbot --shell /usr/sbin/nologin opsbot \
    && mkdir -p /var/lib/opsbot && chown opsbot /var/lib/opsbot
COPY --from=build /src/target/release/opsbot /usr/local/bin/opsbot
COPY commands /opt/opsbot/commands
COPY config /opt/opsbot/config
USER opsbot
WORKDIR /var/lib/opsbot
# The store lives in this volume; sled locks it, so run one opsbot per volume.
ENV OPSBOT_DATA_DIR=/var/lib/opsbot/data OPSBOT_CONFIG=/opt/opsbot/config/demo.toml
VOLUME ["/var/lib/opsbot"]
ENTRYPOINT ["opsbot"]
CMD ["console"]
