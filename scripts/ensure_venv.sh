#!/usr/bin/env bash
# Create (once) a virtualenv for a set of requirements files and link it at LINK.
# The venv lives in a cache folder named by a hash of the requirements, so a fresh
# clone on the same machine reuses it, and a changed requirements file makes a new one.
# Usage: ensure_venv.sh LINK REQ_FILE [REQ_FILE...]   (REQ files ending -nodeps.txt use --no-deps)
set -euo pipefail
link="$1"; shift
python="${PYTHON:-python3.11}"
root="${LLMEVAL_VENV_ROOT:-$HOME/.cache/llmeval/venvs}"
hash="$(cat "$@" | sha256sum | cut -c1-12)"
venv="$root/$(basename "$link" | tr -d .)-$hash"
# pip, without the warnings this machine's pip config prints for every package
pip_() { "$venv/bin/pip" "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
if [ ! -f "$venv/.installed" ]; then
  echo ">> installing $venv from $* (a few minutes, once)"
  rm -rf "$venv"; mkdir -p "$root"
  "$python" -m venv "$venv"
  pip_ install --quiet --upgrade pip
  for req in "$@"; do
    first="$(grep -Ev '^\s*(#|$)' "$req" | head -1)"
    case "$req" in
      *-nodeps.txt) pip_ install --quiet --no-deps -r "$req" ;;
      *) # a leading torch pin is installed alone first so nothing pulls a CUDA build
         if [[ "$first" == torch==* ]]; then pip_ install --quiet "$first"; fi
         pip_ install --quiet -r "$req" ;;
    esac
  done
  touch "$venv/.installed"
else
  echo ">> $venv is installed"
fi
ln -sfn "$venv" "$link"
