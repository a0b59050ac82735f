#!/usr/bin/env bash
# The cross builds, proven: what .ci/run does for the gateways' architectures.
#   aarch64: the production .deb (lean `dist` build, man pages generated under qemu), its
#            binary's --version and `validate` under qemu-aarch64-static; then the demo build
#            (default features, release profile) running a 20 s demo under qemu with the same
#            summary checks as the native demo.
#   armv7:   the production .deb, its binary's --version and `validate` under qemu-arm-static.
# Installs what it needs: the rustup targets, Debian's cross linkers and qemu-user-static.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf
need=()
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v arm-linux-gnueabihf-gcc >/dev/null || need+=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross)
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
command -v readelf >/dev/null || need+=(binutils)
if [ ${#need[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

check_lean() { # target arch runner...
  local target=$1 arch=$2
  shift 2
  local deb bin version
  deb=$(bash cross/package-deb.sh "$target")
  dpkg-deb -f "$deb" Architecture | grep -qx "$arch" || { echo "$deb is not $arch"; exit 1; }
  bin=target/$target/dist/pdtf-agent
  version=$("$@" "$bin" --version)
  echo "$version"
  echo "$version" | grep -qx "target: $target" || { echo "--version does not name $target"; exit 1; }
  echo "$version" | grep -qx "features: none" || { echo "the $arch package is not the lean build"; exit 1; }
  "$@" "$bin" validate --config config/demo.toml
  ls -l "$deb" "$bin"
}

echo "--- aarch64 (arm64)"
qemu_a64=(qemu-aarch64-static -L /usr/aarch64-linux-gnu)
check_lean aarch64-unknown-linux-gnu arm64 "${qemu_a64[@]}"
CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
  cargo build --release -p pdtf-agent --target aarch64-unknown-linux-gnu --locked
bash tests/demo_summary.sh 20 target/aarch64-unknown-linux-gnu/release/pdtf-agent "${qemu_a64[@]}"

echo "--- armv7 (armhf)"
check_lean armv7-unknown-linux-gnueabihf armhf qemu-arm-static -L /usr/arm-linux-gnueabihf
