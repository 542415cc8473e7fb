# Roomgate in a container: a static binary on a distroless base.
#   docker build -t roomgate .
#   docker run -p 8080:8080 -v roomgate-data:/data roomgate -data /data
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/roomgate ./cmd/roomgate

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/roomgate /roomgate
EXPOSE 8080
# SIGTERM drains: sockets get 1012, rooms commit, leases are released.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/roomgate"]
