# Roomgate in a container: a static binary on a distroless base.
#   docker build -t roomgate .
#   docker run -p 8080:8080 -v roomgate-data:/data roomgate -data /data
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/roomgate ./cmd/roomgate && mkdir /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/roomgate /roomgate
# An empty /data the image's user owns, so a volume mounted there is writable.
COPY --from=build --chown=65532:65532 /out/data /data
EXPOSE 8080
# SIGTERM drains: sockets get 1012, rooms commit, leases are released.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/roomgate"]
