# syntax=docker/dockerfile:1.7
# check=error=true

ARG NODE_VERSION=20
ARG GO_VERSION=1.22
ARG ALPINE_VERSION=3.20

FROM --platform=$BUILDPLATFORM node:${NODE_VERSION}-alpine AS web-deps
WORKDIR /src/web
COPY --link web/package.json web/package-lock.json ./
RUN --mount=type=cache,target=/root/.npm,sharing=locked \
    npm ci --no-audit --no-fund

FROM web-deps AS web-build
COPY --link web/ ./
ARG VITE_API_URL=/api
ENV VITE_API_URL=${VITE_API_URL} NODE_ENV=production
RUN npm run build

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-alpine${ALPINE_VERSION} AS go-base
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS="-trimpath -mod=readonly"
RUN --mount=type=bind,source=go.mod,target=go.mod \
    --mount=type=bind,source=go.sum,target=go.sum \
    --mount=type=cache,target=/go/pkg/mod \
    go mod download -x

FROM go-base AS api-build
ARG TARGETOS TARGETARCH
ARG VERSION=dev
RUN --mount=type=bind,target=. \
    --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -ldflags "-s -w -X main.version=${VERSION}" -o /out/api ./services/api

FROM go-base AS test
RUN --mount=type=bind,target=. \
    --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    --network=none \
    go test ./...

FROM alpine:${ALPINE_VERSION} AS runtime
RUN apk add --no-cache ca-certificates tzdata \
 && addgroup -S app && adduser -S -G app app
COPY --from=api-build --chown=app:app --chmod=0755 /out/api /usr/local/bin/api
COPY --from=web-build --link /src/web/dist /srv/www
USER app:app
EXPOSE 8080/tcp
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["wget", "-q", "-O-", "http://127.0.0.1:8080/healthz"]
LABEL org.opencontainers.image.source="https://github.com/example/monorepo" \
      org.opencontainers.image.title="api"
ENTRYPOINT ["/usr/local/bin/api"]
CMD ["--listen", ":8080"]
