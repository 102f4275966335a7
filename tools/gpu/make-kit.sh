#!/usr/bin/env bash
# make-kit.sh [BUILD_DIR] [KIT_DIR]: builds strata-selftest and strata-bench for sm_80 and
# sm_90 on a machine without a GPU (nvcc only) and bundles them, with the shared
# libraries a bare GPU machine lacks, into one folder (`make gpu-kit`; default
# build-gpu-kit/ and gpu-kit/, both git-ignored). Copy the folder to the GPU machine
# and run gpu-kit/run.sh (tools/gpu/run.sh) there.
# Invariant: the kit carries every non-system library ldd resolves for the binaries
# except the CUDA libraries a CUDA 13 machine has (cuBLAS(Lt): 0.5 GB; NCCL: PyTorch's
# wheel ships it), which run.sh finds there; libstdc++ / libgcc_s go to lib/fallback/,
# used only where the machine's own are missing or too old.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build-gpu-kit}
KIT=${2:-gpu-kit}
JOBS=${JOBS:-$(nproc)}

# Release, CUDA on, portable CPU code (the GPU machine's CPU is not this one), tools only.
if [ ! -f "$BUILD/build.ninja" ]; then
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTRATA_CUDA=ON -DSTRATA_NATIVE=OFF \
    -DSTRATA_BUILD_TESTS=OFF -DSTRATA_BUILD_EXAMPLES=OFF "-DCMAKE_CUDA_ARCHITECTURES=80;90"
fi
cmake --build "$BUILD" -j "$JOBS" --target strata-selftest strata-bench

rm -rf "$KIT"
mkdir -p "$KIT/bin" "$KIT/lib/fallback"
for b in strata-selftest strata-bench; do
  cp "$BUILD/tools/$b" "$KIT/bin/"
  strip --strip-unneeded "$KIT/bin/$b"
done
cp tools/gpu/run.sh "$KIT/run.sh"
chmod +x "$KIT/run.sh"

# What the GPU machine provides itself (glibc, the loader, the driver, cuBLAS(Lt),
# NCCL) stays out; the C++ runtime is a fallback only.
system='^(linux-vdso|ld-linux|libc|libm|libdl|librt|libpthread|libutil|libresolv|libcuda|libnvidia-|libcublas|libcublasLt|libnccl)\.'
fallback='^(libstdc\+\+|libgcc_s)\.'
declare -A seen=()
for b in "$KIT"/bin/*; do
  while read -r name path; do
    [ -n "$path" ] && [ -f "$path" ] || continue
    [[ -n ${seen[$name]:-} ]] && continue
    seen[$name]=1
    if [[ $name =~ $system ]]; then continue; fi
    if [[ $name =~ $fallback ]]; then cp -L "$path" "$KIT/lib/fallback/$name"; else cp -L "$path" "$KIT/lib/$name"; fi
  done < <(ldd "$b" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}')
done

# The newest glibc symbol version the binaries and bundled libraries ask for: the GPU
# machine's glibc must be at least that (run.sh's ldd check says so if not).
glibc=$(for f in "$KIT"/bin/* "$KIT"/lib/*.so*; do objdump -T "$f" 2>/dev/null; done |
  grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)
{
  echo "strata GPU kit, $(git describe --always --dirty 2>/dev/null || echo unknown), built $(date -u +%FT%TZ)"
  echo "targets: sm_80, sm_90 (nvcc $(nvcc --version 2>/dev/null | grep -o 'release [0-9.]*' || echo '?'))"
  echo "needs on the GPU machine: glibc >= ${glibc#GLIBC_}, the NVIDIA driver, and from the CUDA toolkit or"
  echo "  PyTorch's nvidia-* wheels (run.sh searches both): $(for b in "$KIT"/bin/*; do ldd "$b"; done |
    awk '{print $1}' | grep -E '^lib(cublas|cublasLt|nccl)\.' | sort -u | tr '\n' ' ')"
  echo "bundled:"
  (cd "$KIT" && find bin lib -type f -printf '  %p %s bytes\n' | sort)
  echo "total: $(du -sh "$KIT" | cut -f1)"
} >"$KIT/MANIFEST"
cat "$KIT/MANIFEST"
