#!/usr/bin/env bash
# install.sh — set up pot on this machine (idempotent).
#
#   ./install.sh            install pot and its runtime dependencies into .venv
#   ./install.sh --dev      also install the test and lint tools (pytest, hypothesis, ruff, mypy)
#
# Environment:
#   POT_VENV=DIR            virtual environment to create/use (default: .venv beside this script)
#   POT_PYTHON=EXE          Python interpreter to build the venv with (default: python3.11, python3)
#   POT_TORCH_SPEC=SPEC     torch requirement to install when none works yet (default: see below)
#   POT_TORCH_INDEX_URL=URL extra index to take torch from (e.g. a CPU or CUDA wheel index)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${POT_VENV:-$here/.venv}"
dev=0
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

die() { echo "install.sh: error: $*" >&2; exit 1; }
step() { echo "==> $*"; }

# 1. A Python >= 3.11.
py="${POT_PYTHON:-}"
if [ -z "$py" ]; then
  for cand in python3.11 python3.12 python3.13 python3; do
    if command -v "$cand" >/dev/null 2>&1 \
      && "$cand" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      py="$cand"; break
    fi
  done
fi
[ -n "$py" ] || die "pot needs Python >= 3.11; none found on PATH (set POT_PYTHON=/path/to/python3.11)"
"$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || die "$py is $("$py" -V 2>&1); pot needs Python >= 3.11"
"$py" -c 'import venv, ensurepip' 2>/dev/null \
  || die "$py lacks the venv/ensurepip modules (Debian/Ubuntu: apt-get install python3-venv)"

# 2. The virtual environment.
if [ ! -x "$venv/bin/python" ]; then
  step "creating virtual environment $venv with $("$py" -V 2>&1)"
  "$py" -m venv "$venv" || die "could not create the virtual environment at $venv"
else
  step "using existing virtual environment $venv"
fi
vpy="$venv/bin/python"
pipq=("$vpy" -m pip --disable-pip-version-check -q)

# 3. torch: keep a working one; CUDA build with an NVIDIA GPU; CPU build otherwise.
if "$vpy" -c 'import torch' >/dev/null 2>&1; then
  step "keeping installed torch $("$vpy" -c 'import torch; print(torch.__version__)')"
else
  extra=()
  [ -n "${POT_TORCH_INDEX_URL:-}" ] && extra+=(--extra-index-url "$POT_TORCH_INDEX_URL")
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    spec="${POT_TORCH_SPEC:-torch>=2.2}"
    step "NVIDIA GPU found: installing a CUDA build of torch ($spec)"
    "${pipq[@]}" install "${extra[@]}" "$spec" || die "pip could not install $spec"
  else
    spec="${POT_TORCH_SPEC:-torch==2.13.0}"
    step "no NVIDIA GPU: installing a CPU build of torch ($spec)"
    # Ask pip which file it would take, and refuse a CUDA wheel (several GB) on a CPU-only machine.
    report="$(mktemp)"
    if ! "${pipq[@]}" install --dry-run --no-deps --ignore-installed --report "$report" "${extra[@]}" "$spec" >/dev/null 2>&1; then
      rm -f "$report"
      die "pip found no torch matching '$spec' (set POT_TORCH_SPEC or POT_TORCH_INDEX_URL to a CPU wheel source)"
    fi
    url="$("$vpy" -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["install"][0]["download_info"]["url"] if r["install"] else "")' "$report")"
    rm -f "$report"
    case "$url" in
      *cpu*|"") ;;
      *) die "the only torch pip offers here ($url) is a CUDA build; on a machine without an NVIDIA GPU set POT_TORCH_INDEX_URL to a CPU wheel index (e.g. PyTorch's /whl/cpu) and run again" ;;
    esac
    "${pipq[@]}" install "${extra[@]}" "$spec" || die "pip could not install $spec"
  fi
  "$vpy" -c 'import torch' || die "torch installed but does not import"
fi

# 4. pot itself (editable, so configs/ and the checkout stay the source of truth).
target="$here"
[ "$dev" = 1 ] && target="$here[dev]"
step "installing pot$([ "$dev" = 1 ] && echo ' with dev tools')"
"${pipq[@]}" install -e "$target" || die "pip could not install pot (see the messages above)"

"$venv/bin/pot" --version >/dev/null || die "pot was installed but 'pot --version' fails"
step "done: $("$venv/bin/pot" --version)"
echo "    activate with:  source $venv/bin/activate"
