#!/usr/bin/env bash
# Build the peerplane server image without any network inside `docker build`:
#   1. the cluster secret for docker-compose (deploy/secrets/cluster-secret), if absent;
#   2. the base image: $BASE if given (e.g. python:3.11-slim where a registry is reachable),
#      else a local debootstrapped Debian bookworm (deploy/base-image.sh, cached);
#   3. a wheelhouse on the host (deploy/.wheelhouse): pip downloads the pinned dependencies
#      of pyproject.toml for the image's Python (cp311, manylinux) and builds peerplane's wheel;
#   4. `docker build --network none` from deploy/Dockerfile with the wheelhouse (and
#      deploy/config/server.hcl) as context.
# Cached: when the sources, pins, Dockerfile and base are unchanged, the image is not rebuilt
# (FORCE=1 rebuilds it; FORCE_BASE=1 also the base). Prints the image name and size at the end.
#
#   deploy/build.sh
#   BASE=python:3.11-slim deploy/build.sh
#   IMAGE=peerplane:local PYTHON=.venv/bin/python deploy/build.sh
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
IMAGE=${IMAGE:-peerplane:local}
BASE=${BASE:-}
wheelhouse="$here/.wheelhouse"
start=$(date +%s)

# ---- 1. the cluster secret (read by compose as a secret; never part of the image) ----
secret_dir="$here/secrets"
if [ ! -s "$secret_dir/cluster-secret" ]; then
  mkdir -p "$secret_dir"
  chmod 700 "$secret_dir"  # only the owner reaches the file on the host ...
  (umask 022 && od -An -vtx1 -N32 /dev/urandom | tr -d ' \n' >"$secret_dir/cluster-secret")
  chmod 644 "$secret_dir/cluster-secret"  # ... and the container's non-root user can read it
  echo "build: generated $secret_dir/cluster-secret"
fi

# ---- 2. the base image ----
if [ -z "$BASE" ]; then
  BASE=peerplane-base:bookworm
  BASE_IMAGE=$BASE "$here/base-image.sh"
elif ! docker image inspect "$BASE" >/dev/null 2>&1; then
  docker pull "$BASE"
fi
base_id=$(docker image inspect -f '{{.Id}}' "$BASE")

# ---- the Python that runs pip on the host ----
if [ -z "${PYTHON:-}" ]; then
  for p in "$root/.venv/bin/python" python3; do
    if "$p" -m pip --version >/dev/null 2>&1; then PYTHON=$p; break; fi
  done
fi
if [ -z "${PYTHON:-}" ] || ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
  echo "build: need a Python with pip on the host (set PYTHON=...)" >&2
  exit 1
fi

# ---- cache check: everything that goes into the image ----
case "$(docker version -f '{{.Server.Arch}}')" in
  amd64) arch=x86_64 ;;
  arm64) arch=aarch64 ;;
  *) echo "build: unsupported engine architecture" >&2; exit 1 ;;
esac
inputs=$(
  cd "$root"
  {
    echo "base=$base_id arch=$arch"
    sha256sum pyproject.toml deploy/Dockerfile deploy/config/server.hcl
    [ -f README.md ] && sha256sum README.md
    find peerplane_cli cluster api lab -type f ! -path '*/__pycache__/*' | LC_ALL=C sort | xargs sha256sum
  } | sha256sum | cut -c1-32
)
if [ "${FORCE:-0}" != 1 ] &&
  [ "$(docker image inspect -f '{{index .Config.Labels "org.peerplane.inputs"}}' "$IMAGE" \
    2>/dev/null || true)" = "$inputs" ]; then
  echo "build: $IMAGE is up to date (cached)"
  exit 0
fi

# ---- 3. wheelhouse ----
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
reqs=$("$PYTHON" -c '
import sys, tomllib
print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]))
' "$root/pyproject.toml")
deps_key=$(printf '%s\n%s\n' "$arch" "$reqs" | sha256sum | cut -c1-32)
deps="$wheelhouse/deps"
if [ "$(cat "$deps/.key" 2>/dev/null || true)" != "$deps_key" ]; then
  echo "build: filling the wheelhouse for cp311 manylinux $arch"
  rm -rf "$deps" && mkdir -p "$deps"
  printf '%s\n' "$reqs" >"$deps/requirements.txt"
  pip=("$PYTHON" -m pip --disable-pip-version-check -q)
  # glibc 2.36 (bookworm): every manylinux tag up to 2_36 (pip does not expand them itself).
  platforms=(--platform "manylinux2014_$arch")
  for v in $(seq 17 36); do platforms+=(--platform "manylinux_2_${v}_$arch"); done
  # Binary wheels for the image's interpreter and platform only. A package published only as
  # an sdist (pysyncobj) is built into a wheel here on the host, if it is pure Python, and
  # the download retried with it on the find-links path.
  for attempt in 1 2 3 4 5 6; do
    if "${pip[@]}" download -d "$deps" --find-links "$deps" --only-binary=:all: \
      --implementation cp --python-version 3.11 --abi cp311 --abi abi3 --abi none \
      "${platforms[@]}" -r "$deps/requirements.txt" pip 2>"$tmp/pip.err"; then
      break
    fi
    missing=$(sed -n 's/.*No matching distribution found for \([^ ]*\).*/\1/p' "$tmp/pip.err")
    if [ -z "$missing" ] || [ "$attempt" = 6 ]; then cat "$tmp/pip.err" >&2; exit 1; fi
    echo "build: no wheel for $missing; building it from its sdist"
    "${pip[@]}" wheel --no-deps --no-binary "${missing%%[=<>!~ ;]*}" -w "$tmp/sdist" "$missing"
    for whl in "$tmp"/sdist/*.whl; do
      case "$whl" in
        *-none-any.whl) ;;
        *) echo "build: $missing is not pure Python; no wheel for cp311 $arch" >&2; exit 1 ;;
      esac
    done
    mv "$tmp"/sdist/*.whl "$deps"/
  done
  echo "$deps_key" >"$deps/.key"
fi
rm -rf "$wheelhouse/app" "$wheelhouse/config" && mkdir -p "$wheelhouse/app" "$wheelhouse/config"
# The servers' shared configuration file (/etc/peerplane/server.hcl in the image).
cp "$here/config/server.hcl" "$wheelhouse/config/server.hcl"
# The project's own wheel (pure Python), built from a copy of what goes into it.
mkdir "$tmp/src"
(
  cd "$root"
  files=(pyproject.toml peerplane_cli cluster api lab)
  for f in README.md LICENSE* MANIFEST.in; do [ -e "$f" ] && files+=("$f"); done
  tar -c --exclude=__pycache__ "${files[@]}"
) | tar -x -C "$tmp/src"
"$PYTHON" -m pip --disable-pip-version-check -q wheel --no-deps -w "$wheelhouse/app" "$tmp/src"

# ---- 4. docker build, no network ----
# The legacy builder unless buildx (BuildKit) is installed; both honour --network none.
if docker buildx version >/dev/null 2>&1; then builder=(docker buildx build --load)
else builder=(env DOCKER_BUILDKIT=0 docker build --force-rm); fi
echo "build: docker build $IMAGE from $BASE (--network none)"
if ! "${builder[@]}" --network none --pull=false \
  --build-arg "BASE=$BASE" --label "org.peerplane.inputs=$inputs" \
  -f "$here/Dockerfile" -t "$IMAGE" "$wheelhouse" >"$tmp/docker-build.log" 2>&1; then
  tail -n 40 "$tmp/docker-build.log" >&2
  exit 1
fi
[ -n "${VERBOSE:-}" ] && cat "$tmp/docker-build.log"
docker image prune -f --filter "label=org.peerplane.inputs" >/dev/null || true

size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
echo "build: $IMAGE ready ($((size / 1000000)) MB) in $(($(date +%s) - start)) s"
