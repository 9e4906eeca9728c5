# syntax=docker/dockerfile:1
# SLIM-TS: slim-node, slim-controller, slim-receiver, slim-sender, slimctl and slim-dev-issuer on
# PATH. The image has no entrypoint of its own: the charts and kind/apps name the program.
#   docker build -t ghcr.io/slim-ts/slim-ts:0.1.0 .     (kind/image.sh also loads it into Kind)
ARG NODE_IMAGE=node:20-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /src
# Dependencies first: this layer stays cached while only the sources change.
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY . .
RUN npm run build

FROM ${NODE_IMAGE} AS runtime-deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

FROM ${NODE_IMAGE}
ENV NODE_ENV=production
WORKDIR /app
COPY --from=runtime-deps /app/node_modules ./node_modules
COPY --from=build /src/dist ./dist
# The gRPC services load their .proto files at run time, from ../../proto relative to dist/proto.
COPY proto/*.proto ./proto/
COPY package.json ./
# One command per package.json "bin" entry, so the list cannot drift from the package; a bin
# whose file the build did not produce fails the image build instead of the first kubectl logs.
RUN node -e ' \
  const fs = require("fs"); \
  const bins = require("/app/package.json").bin; \
  for (const [name, file] of Object.entries(bins)) { \
    const target = "/app/" + file; \
    fs.accessSync(target, fs.constants.X_OK); \
    fs.symlinkSync(target, "/usr/local/bin/" + name); \
  }' \
  && slim-node --help >/dev/null
# The distroless "nonroot" uid: no home, no shell login, owns nothing in the image.
USER 65532:65532
CMD ["slim-node", "--help"]
