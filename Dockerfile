# Build the single binary, then ship it with its templates' static files.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/backflip /usr/local/bin/backflip
COPY static /app/static
ENV BACKFLIP_STATIC_DIR=/app/static
EXPOSE 8080
ENTRYPOINT ["backflip"]
