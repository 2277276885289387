#!/usr/bin/env bash
# build.sh: cross-compile static kioskpay binaries and build .deb packages.
#
#   deploy/build.sh                 all architectures into dist/
#   ARCHES="arm64" deploy/build.sh  just one
#   VERSION=1.2.3 deploy/build.sh   set the version (default: git describe)
#
# Binaries: dist/<goarch>/{kioskpayd,kioskctl,notifyrelay,paysim}, built with
# CGO_ENABLED=0 -trimpath -ldflags "-s -w -X main.version=…". Packages:
# dist/kioskpay_<version>_<debarch>.deb for amd64, arm64 and armhf (GOARM=7).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
NFPM=${NFPM:-go run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.43.0}
ARCHES=${ARCHES:-"amd64 arm64 armhf"}
DIST=${DIST:-dist}

if [ -z "${VERSION:-}" ]; then
	VERSION=$(git describe --tags --always --dirty 2>/dev/null || echo dev)
fi
VERSION=${VERSION#v}
BUILD_TIME=${BUILD_TIME:-$(date -u +%Y-%m-%dT%H:%M:%SZ)}
# Debian versions must start with a digit.
case "$VERSION" in
[0-9]*) deb_version=$VERSION ;;
*) deb_version="0.0.0~git${VERSION//-/.}" ;;
esac

commands=(kioskpayd kioskctl notifyrelay paysim)
mkdir -p "$DIST"
for arch in $ARCHES; do
	case "$arch" in
	amd64) goarch=amd64 goarm="" nfpm_arch=amd64 ;;
	arm64) goarch=arm64 goarm="" nfpm_arch=arm64 ;;
	armhf | arm) goarch=arm goarm=7 nfpm_arch=arm7 ;;
	*) echo "build: unknown arch $arch (want amd64, arm64, armhf)" >&2; exit 2 ;;
	esac
	out="$DIST/$goarch"
	mkdir -p "$out"
	for cmd in "${commands[@]}"; do
		[ -d "cmd/$cmd" ] || { echo "build: cmd/$cmd missing" >&2; exit 1; }
		# Every command reads main.version; the clock check refuses a wall clock
		# earlier than the build time, so stamp it too.
		GOOS=linux GOARCH=$goarch GOARM=$goarm CGO_ENABLED=0 \
			go build -trimpath -ldflags "-s -w -X main.version=$VERSION -X github.com/kioskpay/kioskpay/internal/clock.buildTime=$BUILD_TIME" \
			-o "$out/$cmd" "./cmd/$cmd"
	done
	echo "== linux/$goarch${goarm:+ GOARM=$goarm} ($VERSION)"
	for cmd in "${commands[@]}"; do
		stat -c '%s %n' "$out/$cmd" | awk -v c="$cmd" '{ printf "   %-12s %6.1f MiB (%d bytes)  %s\n", c, $1 / 1048576, $1, $2 }'
	done
	rm -rf "$DIST/stage" && mkdir -p "$DIST/stage"
	cp "$out/kioskpayd" "$out/kioskctl" "$DIST/stage/"
	# nfpm.yaml names dist/stage/; point it at this DIST.
	sed "s#dist/stage/#$DIST/stage/#" deploy/nfpm.yaml >"$DIST/stage/nfpm.yaml"
	ARCH=$nfpm_arch VERSION=$deb_version \
		$NFPM package --config "$DIST/stage/nfpm.yaml" --packager deb --target "$DIST/"
done
rm -rf "$DIST/stage"
ls -l "$DIST"/*.deb
