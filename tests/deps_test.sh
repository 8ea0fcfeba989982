#!/usr/bin/env bash
# ctest unit.deps: every package a CMakeLists.txt (or cmake/*.cmake) finds,
# and every pkg-config module it checks, must be listed in scripts/deps.txt
# beside the Debian package that provides it, so scripts/install-deps
# installs it on a fresh machine. Usage: deps_test.sh [repository root].
set -uo pipefail
root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
deps="$root/scripts/deps.txt"
[ -f "$deps" ] || { echo "FAIL: $deps is missing"; exit 1; }
listed=$(grep -v '^\s*#' "$deps" | awk 'NF > 1 {for (i = 2; i <= NF; ++i) print $i}')
mapfile -t files < <(find "$root" -path "$root/build*" -prune -o \
  -path '*/node_modules' -prune -o \
  \( -name CMakeLists.txt -o -name '*.cmake' \) -print)
needed=()
for f in "${files[@]}"; do
  # find_package(Name ...) inside a Find module's own body finds itself.
  while read -r name; do
    needed+=("cmake:$name|$f")
  done < <(grep -o 'find_package([A-Za-z0-9_]*' "$f" | sed 's/find_package(//')
  # find_program(VAR name ...): the program's package.
  while read -r name; do
    needed+=("program:$name|$f")
  done < <(grep -o 'find_program([A-Za-z0-9_]* [A-Za-z0-9_.+-]*' "$f" \
             | awk '{print $2}')
  # pkg_check_modules(VAR [REQUIRED] [QUIET] [IMPORTED_TARGET] mod [mod...])
  while read -r line; do
    for word in $line; do
      case $word in
        REQUIRED|QUIET|IMPORTED_TARGET|GLOBAL|NO_CMAKE_PATH|NO_CMAKE_ENVIRONMENT_PATH) ;;
        *) needed+=("pkg-config:${word%%[<>=]*}|$f") ;;
      esac
    done
  done < <(grep -o 'pkg_check_modules([^)]*)' "$f" \
             | sed 's/pkg_check_modules(//; s/)$//' | awk '{$1=""; print}')
done
fail=0
for n in "${needed[@]}"; do
  what=${n%%|*}
  file=${n#*|}
  if ! grep -qxF "$what" <<<"$listed"; then
    echo "FAIL: ${file#$root/} needs $what, but scripts/deps.txt names no Debian package for it"
    fail=1
  fi
done
[ $fail -eq 0 ] && echo "ok: ${#needed[@]} finds, each with its Debian package in scripts/deps.txt"
exit $fail
