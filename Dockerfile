# One image for the operator (`freight operator`) and the workers (`freight worker`).
# Static musl binary on a distroless base: no shell, no package manager, non-root.
ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
ARG TARGETARCH=amd64
RUN case "$TARGETARCH" in \
      amd64) echo x86_64-unknown-linux-musl > /rust-target ;; \
      arm64) echo aarch64-unknown-linux-musl > /rust-target ;; \
      *) echo "unsupported arch $TARGETARCH" >&2; exit 1 ;; \
    esac \
 && rustup target add "$(cat /rust-target)"
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && cargo build --release --locked --target "$(cat /rust-target)" --bin freight \
 && rm -rf src
COPY src ./src
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --target "$(cat /rust-target)" --bin freight \
 && cp "target/$(cat /rust-target)/release/freight" /freight

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /freight /freight
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["/freight"]
CMD ["operator"]
