#!/usr/bin/env bash
# Sort a case's medical files into "Medical Records/{ER,Imaging,Physical Therapy,Bills,Other}".
#
# Run it with the case folder as the current directory. It looks only at regular files at the
# case's top level and at the top level of "Medical Records/" (never deeper, never symlinks):
#   ER_*                          -> ER
#   MRI* X-ray* Xray* CT_*        -> Imaging
#   PT_*                          -> Physical Therapy
#   bill* *invoice*               -> Bills
#   anything else in "Medical Records/" (top level only) -> Other
# Names match case-insensitively. An existing file at the destination is never overwritten.
#
# usage: organize_medical_subfolders.sh [--dry-run] [--help]
set -euo pipefail

usage() {
  sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
  echo
  echo "usage: organize_medical_subfolders.sh [--dry-run] [--help]"
}

dry_run=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) dry_run=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "organize_medical_subfolders: unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done

records="Medical Records"
categories=("ER" "Imaging" "Physical Therapy" "Bills" "Other")
declare -A moved=()
for c in "${categories[@]}"; do moved["$c"]=0; done
skipped=0

if [ -e "$records" ] && { [ -L "$records" ] || [ ! -d "$records" ]; }; then
  # A symlink here could point outside the case: refuse rather than write through it.
  echo "organize_medical_subfolders: '$records' exists but is not a plain folder; nothing done." >&2
  exit 1
fi

category_of() {  # $1: file name; $2: 1 when the file is already in "Medical Records/"
  local name="$1"
  shopt -s nocasematch
  case "$name" in
    ER_*) echo "ER" ;;
    MRI*|X-ray*|Xray*|CT_*) echo "Imaging" ;;
    PT_*) echo "Physical Therapy" ;;
    bill*|*invoice*) echo "Bills" ;;
    *) if [ "$2" = 1 ]; then echo "Other"; fi ;;
  esac
  shopt -u nocasematch
}

if [ "$dry_run" = 1 ]; then
  echo "[dry-run] nothing will be changed."
else
  for c in "${categories[@]}"; do mkdir -p -- "$records/$c"; done
fi

move_file() {  # $1: source path (relative); $2: category
  local src="$1" dest="$records/$2/$(basename -- "$1")"
  if [ -e "$dest" ] || [ -L "$dest" ]; then
    echo "skip: '$src' ('$dest' already exists)"
    skipped=$((skipped + 1))
    return
  fi
  if [ "$dry_run" = 1 ]; then
    echo "would move: '$src' -> '$dest'"
  else
    mv -n -- "$src" "$dest"
    echo "moved: '$src' -> '$dest'"
  fi
  moved["$2"]=$(( ${moved["$2"]} + 1 ))
}

shopt -s nullglob dotglob
for src in ./* "./$records"/*; do
  src="${src#./}"
  # Only plain files; symlinks are left alone so nothing outside the case is touched.
  if [ -L "$src" ] || [ ! -f "$src" ]; then continue; fi
  in_records=0
  case "$src" in "$records"/*) in_records=1 ;; esac
  name="$(basename -- "$src")"
  case "$name" in .*) continue ;; esac   # hidden files (.keep, .DS_Store) stay put
  category="$(category_of "$name" "$in_records")"
  if [ -n "$category" ]; then move_file "$src" "$category"; fi
done

total=0
echo
if [ "$dry_run" = 1 ]; then echo "Summary (dry run, nothing moved):"; else echo "Summary:"; fi
for c in "${categories[@]}"; do
  printf '  %-17s %d\n' "$c" "${moved["$c"]}"
  total=$(( total + ${moved["$c"]} ))
done
printf '  %-17s %d\n' "skipped" "$skipped"
echo "  total moved: $total"
