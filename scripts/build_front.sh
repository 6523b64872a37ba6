#!/usr/bin/env bash
# Build the native front (scheduler/front/native/front.cc) into the virtual environment's bin/.
#
#   bash scripts/build_front.sh [--venv DIR] [--if-possible]
#
# It needs g++, pkg-config, gRPC's C++ library and prometheus-cpp (Debian: apt-get install
# libgrpc++-dev prometheus-cpp-dev pkg-config). With --if-possible, a machine without them gets
# a note and exit status 0: the Python front then serves in its place. The code is built for the architecture's baseline
# (no -march=native): the binary runs on any CPU of its kind, not only on the one that built it.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=".venv"
optional=0
while [ $# -gt 0 ]; do
  case "$1" in
    --venv) venv="$2"; shift ;;
    --if-possible) optional=1 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "build_front.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

missing=""
command -v "${CXX:-g++}" >/dev/null 2>&1 || missing="a C++ compiler (g++)"
if ! command -v pkg-config >/dev/null 2>&1 || ! pkg-config --exists grpc++; then
  missing="${missing:+$missing, }gRPC's C++ library (libgrpc++-dev) and pkg-config"
elif ! pkg-config --exists prometheus-cpp-pull prometheus-cpp-core; then
  missing="${missing:+$missing, }prometheus-cpp (prometheus-cpp-dev)"
fi
if [ -n "$missing" ]; then
  msg="build_front.sh: the native front is not built: this machine lacks $missing"
  if [ "$optional" = 1 ]; then
    echo "$msg; the Python front serves customers instead (docs/failover.md, "Fronts")"
    exit 0
  fi
  echo "$msg" >&2
  exit 1
fi

out="$venv/bin/hashserve-front-native"
mkdir -p "$venv/bin"
# shellcheck disable=SC2046
"${CXX:-g++}" -std=c++17 -O2 -Wall -Wextra \
  scheduler/front/native/front.cc -o "$out.tmp" \
  $(pkg-config --cflags --libs grpc++ prometheus-cpp-pull prometheus-cpp-core)
mv "$out.tmp" "$out"
echo "build_front.sh: built $out (gRPC $(pkg-config --modversion grpc++))"
