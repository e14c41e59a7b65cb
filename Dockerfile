# A small runtime image of the refract host. Build:   docker build -t refract .
# Run (tokens from a mounted refract.toml; see README "Packaging"):
#   docker run -p 7878:7878 -v $PWD/plugins:/plugins -v refract-data:/data \
#     -v $PWD/refract.toml:/etc/refract/refract.toml refract

# Build stage: the toolchain the workspace pins (rust-version 1.95), and the
# repository's own release build script, so the image builds what CI tests.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN scripts/build-release

# Runtime stage: the binary alone on a slim Debian of the same release (glibc).
FROM debian:bookworm-slim
COPY --from=build /src/target/release/refract /usr/local/bin/refract
RUN useradd --system --uid 10001 --home-dir /data refract \
    && mkdir -p /data /plugins /etc/refract && chown refract /data
USER refract
# Every flag of `refract run` has an environment variable (README "Configuration reference").
ENV REFRACT_DATA_DIR=/data \
    REFRACT_PLUGINS_DIR=/plugins \
    REFRACT_HTTP=0.0.0.0:7878 \
    REFRACT_CONFIG=/etc/refract/refract.toml
VOLUME ["/data"]
EXPOSE 7878
ENTRYPOINT ["refract"]
CMD ["run"]
