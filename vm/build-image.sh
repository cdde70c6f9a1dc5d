#!/usr/bin/env bash
# Builds the guest image of the VM testbed: a Debian cloud kernel and an initramfs holding
# busybox, the ethpaxos binary (built with --features dpdk) with every library it and DPDK's
# virtio PMD load, the kernel modules the guest needs, and vm/init as PID 1.
#
#   vm/build-image.sh [BINARY] [OUT_DIR]
#
# BINARY defaults to target/release/ethpaxos, OUT_DIR to vm/.build; writes OUT_DIR/vmlinuz and
# OUT_DIR/initrd.img. Needs apt-get (Debian packages are downloaded, not installed), cpio and
# the host's DPDK (the libraries are copied from it, so guest and binary match).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-$here/../target/release/ethpaxos}
out=${2:-$here/.build}
bin=$(realpath "$bin")
mkdir -p "$out"
out=$(realpath "$out")

[ -x "$bin" ] || { echo "build-image: no binary at $bin (cargo build --release --features dpdk)" >&2; exit 1; }
ldd "$bin" | grep -q librte_eal || {
  echo "build-image: $bin is not built with --features dpdk (it does not link DPDK)" >&2
  exit 1
}
pmds=$(pkg-config --variable=pmdsdir libdpdk 2>/dev/null || true)
[ -n "$pmds" ] || pmds=$(ls -d /usr/lib/x86_64-linux-gnu/dpdk/pmds-* 2>/dev/null | head -1)
[ -d "$pmds" ] || { echo "build-image: DPDK's pmds directory not found (apt-get install dpdk)" >&2; exit 1; }

# Debian packages, downloaded once into OUT_DIR/debs.
debs=$out/debs
mkdir -p "$debs"
fetch() {
  local pkg=$1
  if ! ls "$debs/${pkg}"_*.deb > /dev/null 2>&1; then
    (cd "$debs" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >&2)
  fi
  ls "$debs/${pkg}"_*.deb | head -1
}
kpkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/ { print $2; exit }')
[ -n "$kpkg" ] || { echo "build-image: apt knows no linux-image-cloud-amd64 (apt-get update?)" >&2; exit 1; }
kdeb=$(fetch "$kpkg")
bbdeb=$(fetch busybox-static)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dpkg-deb -x "$kdeb" "$work/kernel"
dpkg-deb -x "$bbdeb" "$work/busybox"
cp "$work"/kernel/boot/vmlinuz-* "$out/vmlinuz"

root=$work/root
# A merged /usr, as on the host (the libraries' symlinks are copied as they are).
mkdir -p "$root"/{bin,sbin,usr/bin,usr/lib/modules,usr/lib64,etc,proc,sys,dev,run,tmp,data,var}
ln -s usr/lib "$root/lib"
ln -s usr/lib64 "$root/lib64"
ln -s ../run "$root/var/run"
cp "$work/busybox/bin/busybox" "$root/bin/busybox"
for app in sh mount umount mkdir cat echo printf tr sleep kill stty poweroff insmod ls stat \
  tail head touch sync; do
  ln -s busybox "$root/bin/$app"
done
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk \
  virtio_console uio uio_pci_generic qemu_fw_cfg; do
  f=$(find "$work/kernel/lib/modules" -name "$m.ko*" | head -1)
  [ -n "$f" ] || { echo "build-image: the kernel has no module $m" >&2; exit 1; }
  case $f in
    *.ko) cp "$f" "$root/lib/modules/$m.ko" ;;
    *.ko.xz) xz -dc "$f" > "$root/lib/modules/$m.ko" ;;
    *.ko.zst) zstd -qdc "$f" > "$root/lib/modules/$m.ko" ;;
    *) echo "build-image: cannot unpack $f" >&2; exit 1 ;;
  esac
done
# Without its debug info: the guest loads it from RAM.
strip --strip-debug -o "$root/usr/bin/ethpaxos" "$bin" 2> /dev/null || cp "$bin" "$root/usr/bin/ethpaxos"
cp "$here/init" "$root/init"
chmod +x "$root/init"

# The libraries: what the binary links, and the drivers EAL loads from its pmds directory
# (only those the guest uses: PCI and virtual buses, the virtio PMD, the ring mempool).
mkdir -p "$root$pmds"
# Copies path $1 into the image, symlinks as symlinks, following each link: a library
# reached by two names (DPDK's pmds directory links into the library directory) stays one
# file, so the dynamic loader loads it once.
copy_lib() {
  local f=$1 t
  while [ ! -e "$root$f" ] && [ ! -L "$root$f" ]; do
    mkdir -p "$root$(dirname "$f")"
    if [ -L "$f" ]; then
      cp -P "$f" "$root$f"
      t=$(readlink "$f")
      case $t in /*) f=$t ;; *) f=$(dirname "$f")/$t ;; esac
    else
      cp "$f" "$root$f"
      return
    fi
  done
}
libs_of() {
  ldd "$1" | awk '/=> \// { print $3 } /^\t\/[^ ]+ \(/ { print $1 }'
}
for f in $(libs_of "$bin"); do copy_lib "$f"; done
for drv in bus_pci bus_vdev net_virtio mempool_ring; do
  so=$(ls "$pmds"/librte_"$drv".so* 2> /dev/null | head -1)
  [ -n "$so" ] || { echo "build-image: DPDK has no $drv driver in $pmds" >&2; exit 1; }
  copy_lib "$so"
  for f in $(libs_of "$so"); do copy_lib "$f"; done
done

(cd "$root" && find . | cpio --quiet -o -H newc) | gzip -1 > "$out/initrd.img"
echo "build-image: $out/vmlinuz ($kpkg), $out/initrd.img ($(du -h "$out/initrd.img" | cut -f1))"
