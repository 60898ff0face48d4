#!/usr/bin/env bash
# Create or update .venv at the project root and install rvq-viewer into it.
#   scripts/bootstrap.sh        the app
#   scripts/bootstrap.sh test   the app, the test tools and the peer packages the parity tests run
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
py=.venv/bin/python
$py -m pip install -q --upgrade pip
# Where torch is missing, take the pinned CPU wheel (on this machine's disk) before the open range
# in pyproject.toml could pull a multi-GB CUDA build. A GPU user installs their CUDA torch first.
$py -c "import torch" 2>/dev/null || $py -m pip install -q "torch==2.13.0"
if [ "${1:-}" = "test" ]; then
    # with the dask and faiss extras, and lightning, transformers and accelerate (the monitor's callbacks)
    $py -m pip install -q -e ".[test,dask,faiss]"
    # Parity references. encodec declares torchaudio, which this torch does not need and which could
    # replace it: its quantizer needs only torch and einops, so it goes in without dependencies.
    $py -m pip install -q --no-deps "encodec==0.1.1"
    # The other peers' own quantizers, for parity tests. Also --no-deps: moshi pins an older torch and
    # DAC / SpeechTokenizer pull whole audio stacks; the tests reach their quantizer files directly.
    # audiocraft pins torch 2.1 and flashy's __init__ needs dora: the tests run their quantizer and
    # checkpoint-state files by path.
    $py -m pip install -q --no-deps "vector-quantize-pytorch==1.32.0" "einx==0.4.3" "frozendict==2.5.1" \
        "loguru==0.7.3" "torch-einops-utils==0.2.0" "snac==1.2.1" "descript-audio-codec==1.0.0" \
        "moshi==0.2.13" "speechtokenizer==1.0.1" "audiocraft==1.3.0" "flashy==0.0.2"
    # FSQ peers: S3Tokenizer v2 and Stable Codec (their quantizer files run by path: the package
    # __init__s import onnx, torchaudio and stable-audio-tools).
    $py -m pip install -q --no-deps "s3tokenizer==0.3.0" "stable-codec==0.1.2"
    # transformers' own codec models (save_pretrained folders, X-Codec2) and OmegaConf's DictConfig
    # (audiocraft's xp.cfg). Neither depends on torch, so they install with their dependencies.
    $py -m pip install -q "transformers==5.24.0" "omegaconf==2.4.0"
else
    $py -m pip install -q -e .
    # Compile umap's code now (cached on disk) so the first centroid map takes seconds, not minutes.
    # Not fatal: without it the app still shows PCA maps and compiles UMAP on first use.
    if [ -z "${RVQ_VIEWER_NO_WARMUP:-}" ]; then
        echo "compiling UMAP once (up to a few minutes; RVQ_VIEWER_NO_WARMUP=1 skips it)..."
        .venv/bin/rvq-viewer warm-up || echo "warm-up failed; the app will compile UMAP on first use"
    fi
fi
