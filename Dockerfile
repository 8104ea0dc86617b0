# syntax=docker/dockerfile:1
# entra-callout container image: `docker build -t ghcr.io/entra-callout/entra-callout:0.1.0 .`
# (the Helm chart's default image; the tag is the crate version / the chart's appVersion).

# Build: the locked dependency set, release profile. aws-lc-sys needs a C compiler (cc) only.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY policies ./policies
COPY tests ./tests
COPY examples ./examples
# Without the `dev` feature: no `entra-callout dev` and no DEV-ONLY signing key in the image.
RUN cargo build --locked --release --no-default-features --bin entra-callout \
 && strip target/release/entra-callout

# Runtime: distroless (glibc, CA certificates for the identity provider's HTTPS, no shell), as
# the unprivileged "nonroot" user (65532), which the chart's securityContext also requires.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/entra-callout /usr/local/bin/entra-callout
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/entra-callout"]
CMD ["serve", "--config", "/etc/entra-callout/config/config.yaml"]
