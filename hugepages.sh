#!/usr/bin/env bash
# Huge pages for the DPDK data plane, in the spirit of DPDK's dpdk-hugepages.py.
#
#   hugepages.sh status                      what is reserved, free and mounted
#   hugepages.sh reserve N [--size 2M|1G]    reserve N pages (machine-wide; root)
#   hugepages.sh mount [DIR] [--size 2M|1G]  mount hugetlbfs (default /dev/hugepages; root)
#   hugepages.sh unmount [DIR]               unmount it (default /dev/hugepages; root)
#   hugepages.sh release [--size 2M|1G]      give every free page of that size back (root)
#
# DPDK with `--in-memory` needs reserved pages but no mount; without it, EAL wants a
# hugetlbfs mount. Exit status: 0 done, 1 refused or failed (with the reason), 2 bad usage.
set -euo pipefail

SYS=/sys/kernel/mm/hugepages
DEFAULT_MOUNT=/dev/hugepages

die() { echo "hugepages.sh: $*" >&2; exit 1; }
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit 2; }

need_root() {
  [ "$(id -u)" = 0 ] || die "$1 needs root (it changes machine-wide kernel settings)"
}

# 2M -> 2048, 1G -> 1048576 (kB, as the kernel names its directories)
size_kb() {
  case "$1" in
    2M|2m|2048k|2048kB) echo 2048 ;;
    1G|1g|1048576k|1048576kB) echo 1048576 ;;
    *) echo "hugepages.sh: unknown page size '$1' (use 2M or 1G)" >&2; exit 2 ;;
  esac
}

size_dir() {
  local kb=$1
  local dir="$SYS/hugepages-${kb}kB"
  [ -d "$dir" ] || die "this kernel or CPU offers no $(human "$kb") pages (no $dir)"
  echo "$dir"
}

human() { if [ "$1" -ge 1048576 ]; then echo "$(( $1 / 1048576 ))G"; else echo "$(( $1 / 1024 ))M"; fi; }

status() {
  [ -d "$SYS" ] || die "no $SYS: this kernel has no huge page support"
  printf '%-6s %8s %8s %8s %8s\n' size total free reserved surplus
  for dir in "$SYS"/hugepages-*kB; do
    local kb=${dir##*hugepages-}
    kb=${kb%kB}
    printf '%-6s %8s %8s %8s %8s\n' "$(human "$kb")" "$(cat "$dir/nr_hugepages")" \
      "$(cat "$dir/free_hugepages")" "$(cat "$dir/resv_hugepages")" "$(cat "$dir/surplus_hugepages")"
  done
  local mounts
  mounts=$(awk '$3 == "hugetlbfs" { print "  " $2 " (" $4 ")" }' /proc/mounts)
  if [ -n "$mounts" ]; then echo "hugetlbfs mounts:"; echo "$mounts"; else echo "hugetlbfs mounts: none"; fi
}

parse_size() {
  SIZE_KB=2048
  ARGS=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --size) [ $# -ge 2 ] || usage; SIZE_KB=$(size_kb "$2"); shift 2 ;;
      --size=*) SIZE_KB=$(size_kb "${1#--size=}"); shift ;;
      -h|--help) usage ;;
      *) ARGS+=("$1"); shift ;;
    esac
  done
}

reserve() {
  parse_size "$@"
  [ ${#ARGS[@]} = 1 ] || usage
  local n=${ARGS[0]}
  [[ "$n" =~ ^[0-9]+$ ]] || die "'$n' is not a page count"
  need_root reserve
  local dir; dir=$(size_dir "$SIZE_KB")
  echo "$n" > "$dir/nr_hugepages" || die "the kernel refused $n pages of $(human "$SIZE_KB")"
  local got; got=$(cat "$dir/nr_hugepages")
  if [ "$got" -lt "$n" ]; then
    die "asked for $n pages of $(human "$SIZE_KB"), the kernel found memory for $got (fragmented or too little free memory); $got stay reserved"
  fi
  echo "reserved $got pages of $(human "$SIZE_KB") ($(( got * SIZE_KB / 1024 )) MiB)"
}

mount_fs() {
  parse_size "$@"
  [ ${#ARGS[@]} -le 1 ] || usage
  local dir=${ARGS[0]:-$DEFAULT_MOUNT}
  need_root mount
  size_dir "$SIZE_KB" >/dev/null
  if awk -v d="$dir" '$2 == d && $3 == "hugetlbfs" { found = 1 } END { exit !found }' /proc/mounts; then
    echo "$dir is already a hugetlbfs mount"
    return 0
  fi
  mkdir -p "$dir"
  mount -t hugetlbfs -o "pagesize=$(human "$SIZE_KB")" nodev "$dir" || die "cannot mount hugetlbfs on $dir"
  echo "mounted hugetlbfs ($(human "$SIZE_KB") pages) on $dir"
}

unmount_fs() {
  [ $# -le 1 ] || usage
  local dir=${1:-$DEFAULT_MOUNT}
  need_root unmount
  awk -v d="$dir" '$2 == d && $3 == "hugetlbfs" { found = 1 } END { exit !found }' /proc/mounts ||
    die "$dir is not a hugetlbfs mount"
  # Page files left behind by a DPDK process that did not clean up would keep pages busy.
  local left; left=$(find "$dir" -maxdepth 1 -type f | wc -l)
  [ "$left" = 0 ] || echo "note: removing $left page file(s) left in $dir"
  find "$dir" -maxdepth 1 -type f -delete
  umount "$dir" || die "cannot unmount $dir (a process still uses it?)"
  echo "unmounted $dir"
}

release() {
  parse_size "$@"
  [ ${#ARGS[@]} = 0 ] || usage
  need_root release
  local dir; dir=$(size_dir "$SIZE_KB")
  local total free; total=$(cat "$dir/nr_hugepages"); free=$(cat "$dir/free_hugepages")
  local busy=$(( total - free ))
  echo "$busy" > "$dir/nr_hugepages"
  if [ "$busy" -gt 0 ]; then
    die "$busy pages of $(human "$SIZE_KB") are in use (a running DPDK process, or page files in a hugetlbfs mount); released the $free free ones"
  fi
  echo "released $total pages of $(human "$SIZE_KB")"
}

[ $# -ge 1 ] || usage
cmd=$1; shift
case "$cmd" in
  status) [ $# = 0 ] || usage; status ;;
  reserve) reserve "$@" ;;
  mount) mount_fs "$@" ;;
  unmount|umount) unmount_fs "$@" ;;
  release) release "$@" ;;
  -h|--help|help) usage ;;
  *) echo "hugepages.sh: unknown command '$cmd'" >&2; usage ;;
esac
