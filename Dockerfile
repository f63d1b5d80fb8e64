# syntax=docker/dockerfile:1
#
# caly: a small runtime image with the one binary, its pipelines and prompts.
#
#   docker build -t caly .
#   docker run -p 8080:8080 caly                       # SQLite in /app/data, Realtime simulator
#   docker run -p 8080:8080 -e DATABASE_URL=postgres://… -e OPENAI_API_KEY=… caly
#
# The binary links every Rust and C dependency (SQLite, ring) statically and only glibc
# dynamically: glibc's allocator is kinder to a many-threaded real-time server than musl's,
# and distroless/cc carries exactly glibc, libgcc and CA certificates.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin caly \
    && cp target/release/caly /caly \
    && strip /caly \
    && mkdir -p /empty

FROM gcr.io/distroless/cc-debian12:nonroot
WORKDIR /app
COPY --from=build /caly /app/caly
COPY pipelines /app/pipelines
COPY prompts /app/prompts
# A writable place for the SQLite default (PostgreSQL in production: set DATABASE_URL).
COPY --from=build --chown=nonroot:nonroot /empty /app/data
ENV BIND=0.0.0.0 \
    PORT=8080 \
    DATABASE_URL=sqlite:///app/data/caly.db \
    CALY_LOG_FORMAT=json
EXPOSE 8080
USER nonroot
# Exec form: caly is PID 1 and gets Railway's (or Docker's) SIGTERM itself, drains its calls,
# flushes its records and exits.
ENTRYPOINT ["/app/caly", "serve"]
