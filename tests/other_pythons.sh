#!/usr/bin/env bash
# The Pythons attendees bring: run the package's tests and the lessons (nbval) on each extra
# Python found under pyenv, in a venv of its own (.venv-3.X), in the background while the main
# suite runs:   tests/other_pythons.sh MAIN-COMMAND...   (what `make test` does)
# Exit status: the main command's, or 1 if a run on another Python failed.
# KIT_OTHER_PYTHONS="3.10 3.12 3.13" (the default) chooses the versions; set it empty to skip.
# A version that is not installed is skipped with a line that says so (CI has all three).
set -uo pipefail
cd "$(dirname "$0")/.."
versions=${KIT_OTHER_PYTHONS-"3.10 3.12 3.13"}
root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
logs=.pytest-pythons
mkdir -p "$logs"

find_python() { ls -d "$root"/versions/"$1".*/bin/python 2>/dev/null | sort -V | tail -1; }

run_one() {  # build (or reuse) the venv, then run the tests; everything goes to its log
  local v=$1 py=$2 venv=.venv-$1
  if [ ! -f "$venv/.installed" ] || [ requirements.txt -nt "$venv/.installed" ]; then
    rm -rf "$venv" && "$py" -m venv "$venv" &&
      "$venv/bin/python" -m pip install -q --upgrade pip &&
      "$venv/bin/python" -m pip install -q -r requirements.txt &&
      touch "$venv/.installed" || return 3
  fi
  # The package's tests and the lessons under nbval: not the browser test, the benchmark, the
  # papermill runs or the solution notebooks (the main Python runs those; what differs between
  # Pythons is asyncio and the kernel, which the lessons exercise top to bottom).
  "$venv/bin/python" -m pytest -q -p no:cacheprovider -m "not browser" \
    -k "not papermill and not test_bench and not solutions" tests/
}

[ $# -ge 1 ] || { echo "usage: $0 MAIN-COMMAND..." >&2; exit 2; }
for v in $versions; do
  py=$(find_python "$v")
  if [ -z "$py" ]; then echo "other Pythons: $v is not installed under $root/versions: skipped"; continue; fi
  echo "other Pythons: testing on $("$py" --version 2>&1) in the background (log: $logs/$v.log)"
  rm -f "$logs/$v.rc"
  (run_one "$v" "$py" >"$logs/$v.log" 2>&1; echo $? >"$logs/$v.rc") &
done

"$@"
status=$?
wait
for v in $versions; do
  [ -f "$logs/$v.rc" ] || continue
  rc=$(cat "$logs/$v.rc")
  echo "== Python $v (package tests + notebooks under nbval): $(grep -E '[0-9]+ (passed|failed)' "$logs/$v.log" | tail -1 | tr -d '=') rc=$rc"
  if [ "$rc" != 0 ]; then [ "$status" != 0 ] || status=1; tail -40 "$logs/$v.log"; fi
done
exit $status
