#!/usr/bin/env bash
# bench/pool.sh (make bench-pool): the targets' verdicts over several full
# runs of `make bench-compare` at once. Each run's samples (its
# bench/results/<stamp>.jsonl and <stamp>-relay.jsonl) are pooled and
# summarized as one run with RUNS × the runs: the medians, ratios and
# verdicts then rest on every sample, so that a target that sits at its line
# is seen there, not met in one run and missed in the next by the machine's
# noise. Each sample is marked with its run's stamp ("batch"): the 95%
# intervals draw whole runs, then pairs of samples within each. The crypto
# floor is the median of the runs' own (the "Sum" line of each
# <stamp>.md); no server is started and nothing is measured again.
#
# Knobs (environment): STAMPS="2026-12-05-a 2026-12-05-b …" (required: the
# runs to pool) RESULTS=bench/results OUT=<file> (also write the Markdown
# there; default: only print it).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

RESULTS=${RESULTS:-bench/results}
read -ra stamps <<<"${STAMPS:-}"
[ "${#stamps[@]}" -gt 0 ] || die "STAMPS: the stamps of the runs to pool (bench/results/<stamp>.jsonl), separated by spaces"

build
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
: >"$tmp/http.jsonl"
: >"$tmp/relay.jsonl"
floors=()
# batch STAMP FILE: FILE's JSON lines, each marked as part of the full run
# STAMP ("batch"), so that the intervals draw whole runs.
batch() { sed "s/^{/{\"batch\":\"$1\",/" "$2"; }
for s in "${stamps[@]}"; do
  [[ $s =~ ^[A-Za-z0-9._-]+$ ]] || die "$s: a stamp is letters, digits, '.', '_' and '-'"
  [ -f "$RESULTS/$s.jsonl" ] || die "$RESULTS/$s.jsonl: no such run"
  batch "$s" "$RESULTS/$s.jsonl" >>"$tmp/http.jsonl"
  if [ -f "$RESULTS/$s-relay.jsonl" ]; then
    batch "$s" "$RESULTS/$s-relay.jsonl" >>"$tmp/relay.jsonl"
  else
    log "$s: no relay rows ($RESULTS/$s-relay.jsonl), pooled without them"
  fi
  f=$(awk '$1 == "Sum" { print $2; exit }' "$RESULTS/$s.md" 2>/dev/null || true)
  [ -n "$f" ] || die "$RESULTS/$s.md: no crypto floor (its \"Sum\" line)"
  floors+=("$f")
done
floor=$(printf '%s\n' "${floors[@]}" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')

{
  echo "# Pooled: ${#stamps[@]} full runs of \`make bench-compare\`"
  echo
  echo "Command: \`STAMPS=\"${stamps[*]}\" make bench-pool\` (bench/pool.sh). Every sample of the runs $(IFS=,; sed 's/,/, /g' <<<"${stamps[*]}") taken together; the crypto floor is the median of theirs (µs: ${floors[*]})."
  echo
  echo "## HTTP"
  echo
  "$FG" bench -summarize "$tmp/http.jsonl" -floor-us "$floor"
  if [ -s "$tmp/relay.jsonl" ]; then
    echo
    echo "## Relays"
    echo
    "$FG" bench -summarize-relay "$tmp/relay.jsonl"
  fi
} >"$tmp/pool.md"
[ -z "${OUT:-}" ] || cp "$tmp/pool.md" "$OUT"
cat "$tmp/pool.md"
