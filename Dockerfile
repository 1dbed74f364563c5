# provq in a container: built in one stage, run as a non-root user from a slim image.
#   docker build -t provq .
#   docker run -p 8080:8080 -v provq-data:/var/lib/provq provq
# Point it at PostgreSQL with -e PROVQ_DATABASE_URL=postgres://user@host/provq.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin provq

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/provq --create-home provq
COPY --from=build /src/target/release/provq /usr/local/bin/provq
USER provq:provq
WORKDIR /var/lib/provq
# MALLOC_ARENA_MAX: see deploy/provq.service.
ENV MALLOC_ARENA_MAX=2 \
    PROVQ_LISTEN=0.0.0.0:8080 \
    PROVQ_PROMETHEUS__LISTEN=0.0.0.0:2112 \
    PROVQ_DATABASE_URL=sqlite:///var/lib/provq/provq.db?mode=rwc
EXPOSE 8080 2112
VOLUME ["/var/lib/provq"]
# /healthz answers 200 while the database answers; bash's /dev/tcp needs no curl in the image.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/usr/local/bin/provq"]
CMD ["serve"]
