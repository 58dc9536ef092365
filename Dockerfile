# syntax=docker/dockerfile:1.7
# The one `tollgate` image: every role (authority, injector, sidecar, ctl, demo) is a
# subcommand of the same binary, e.g. `docker run tollgate:0.1.0 authority`. The image also
# holds `tollgate-sidecar`, the sidecar alone (same flags and environment as
# `tollgate sidecar`): the injector runs it in every pod, because it maps a fraction of the
# all-in-one binary's code (no authority, ledger, SQL or webhook) and so keeps the sidecar's
# resident memory within its target.
#
#   docker build -t tollgate:0.1.0 .
#
# Stage 1 builds a release binary with the Rust toolchain (no protoc needed: the proto crate
# compiles .proto files in pure Rust; SQLite is bundled and TLS is rustls, so the binary needs
# only glibc and libgcc at run time). Stage 2 is distroless "cc" (glibc, libgcc, CA
# certificates, no shell, no package manager) running as the non-root user 65532.

ARG RUST_VERSION=1.95
FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS builder
WORKDIR /src
# A C compiler is in the image already (for the bundled SQLite and ring); nothing else is needed.
ENV CARGO_TERM_COLOR=never \
    CARGO_PROFILE_RELEASE_DEBUG=0 \
    CARGO_PROFILE_RELEASE_STRIP=symbols
COPY . .
# `tollgate-sidecar` is a build of its own, so the sidecar's dependencies get only the
# features the sidecar asks for (one build of both would unify them with the authority's).
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin tollgate \
 && install -D -m 0755 target/release/tollgate /out/tollgate \
 && /out/tollgate --version \
 && cargo build --release --locked -p tollgate-sidecar --bin tollgate-sidecar \
 && install -D -m 0755 target/release/tollgate-sidecar /out/tollgate-sidecar \
 && /out/tollgate-sidecar --version

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="tollgate" \
      org.opencontainers.image.description="Pre-call credit and quota enforcement for AI agent fleets" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/tollgate /out/tollgate-sidecar /usr/local/bin/
# distroless' nonroot user; the Helm chart sets the same uid and a read-only root filesystem.
USER 65532:65532
# authority gRPC, authority HTTP, sidecar HTTP, injector HTTPS
EXPOSE 7070 7071 7072 8443
ENTRYPOINT ["/usr/local/bin/tollgate"]
CMD ["--help"]
