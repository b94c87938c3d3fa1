# syntax=docker/dockerfile:1
# proxyusage: static Go build, small non-root runtime image.
#   docker build -t proxyusage .
#   docker run -e DATABASE_URL=postgres://... -e JWT_SECRET=... -p 8080:8080 proxyusage
# The service applies the migrations at start (`proxyusage serve`).

FROM golang:1.26-alpine AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOOS=linux GOFLAGS=-mod=readonly
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags="-s -w" -o /out/proxyusage ./cmd/proxyusage

# Alpine rather than scratch: a shell and wget for the health check.
FROM alpine:3.22 AS runtime
RUN apk add --no-cache ca-certificates tzdata \
 && addgroup -S -g 10001 proxyusage \
 && adduser -S -D -H -u 10001 -G proxyusage -h /nonexistent -s /sbin/nologin proxyusage
COPY --from=build /out/proxyusage /usr/local/bin/proxyusage
USER 10001:10001
ENV HTTP_ADDR=:8080 LOG_LEVEL=info
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD wget -q -O /dev/null http://127.0.0.1:8080/readyz || exit 1
ENTRYPOINT ["/usr/local/bin/proxyusage"]
CMD ["serve"]
