#!/usr/bin/env bash
# Installs everything Parley needs to build, test and run on Debian 12.
# The one place dependencies are listed: deploy/local/up, tests/run, CI and
# the Dockerfiles all call it. Safe to run again; apt-get update runs once
# per machine (a stamp under /var/lib records it).
set -euo pipefail

PKGS_BUILD=(
	build-essential cmake pkg-config git ca-certificates
	libnng-dev libprotobuf-c-dev protobuf-c-compiler
	libpq-dev libcurl4-openssl-dev libsodium-dev libjansson-dev
	libmicrohttpd-dev libcmocka-dev
)
# What the images' runtime stage holds (deploy/Dockerfile): the shared
# libraries the binaries link, and curl for the HEALTHCHECK.
PKGS_RUNTIME=(
	libnng1 libprotobuf-c1 libpq5 libcurl4 libsodium23 libjansson4
	libmicrohttpd12 ca-certificates curl
)
PKGS_POSTGRES=(postgresql-15 postgresql-contrib)
PKGS_TEST=(
	"${PKGS_POSTGRES[@]}"
	clang libclang-rt-14-dev clang-format
	curl procps docker-compose jq python3 chromium chromium-driver openssl
)
# Only for deploy/check-containers (a Debian base made with debootstrap, the
# images built with buildah, the stack run by podman-compose): not for CI.
PKGS_CONTAINERS=(
	debootstrap buildah podman podman-compose fuse-overlayfs slirp4netns
	uidmap containernetworking-plugins golang-github-containernetworking-plugin-dnsname
	curl jq
)
# Only for the benchmarks' gRPC baseline; skipped with PARLEY_NO_BENCH_DEPS=1.
PKGS_BENCH=(libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler)

want=("${PKGS_BUILD[@]}")
case "${1:-all}" in
build) ;;
test) want+=("${PKGS_TEST[@]}") ;;
runtime) want=("${PKGS_RUNTIME[@]}") ;;
postgres) want=("${PKGS_POSTGRES[@]}") ;;
containers) want=("${PKGS_CONTAINERS[@]}") ;;
all)
	want+=("${PKGS_TEST[@]}")
	# tests/deploy: Node.js with npm, and kubectl for `kubectl kustomize`
	# (Debian's own packages when the machine has neither command).
	command -v node >/dev/null && command -v npm >/dev/null || want+=(nodejs npm)
	command -v kubectl >/dev/null || want+=(kubernetes-client)
	[ "${PARLEY_NO_BENCH_DEPS:-0}" = 1 ] || want+=("${PKGS_BENCH[@]}")
	;;
*)
	echo "usage: deploy/deps.sh [build|test|all|runtime|postgres|containers]" >&2
	exit 2
	;;
esac

missing=()
for p in "${want[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
stamp=/var/lib/parley-apt-updated
if [ ! -e "$stamp" ] || [ -n "$(find "$stamp" -mmin +1440 2>/dev/null)" ]; then
	$SUDO apt-get update -qq
	$SUDO touch "$stamp" 2>/dev/null || true
fi
echo "deps: installing ${missing[*]}" >&2
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
