#!/usr/bin/env bash
# Reproduce the catalog: run every experiment file (or the named ones) in order, then
# write its report. Each experiment is its own sweep, so its inner sweep is never lost;
# runs already done are skipped (runner.skip_done), so a crashed or killed invocation is
# resumed by running it again, and a dense baseline shared by several tables runs once.
#
#   experiments/reproduce.sh [--scale cpu|paper] [--claim-seeds 1,2] [--dry-run] [NAME ...] [-- OVERRIDE ...]
#   NAME: an experiment file without .yaml, e.g. slimllm/table4_ablation
#   --claim-seeds S: then run the runs each experiment's claims compare at the seeds S
#     (python -m slimexp.catalog seeds), and report over seeds 0,S
#   OVERRIDE: Hydra overrides for every sweep, e.g. hydra/launcher=slurm logger=offline
#
# Reports go to results/reports/<name>.md (results.dir from SLIMEXP_RESULTS_DIR).
set -uo pipefail
cd "$(dirname "$0")/.."

scale=cpu
dry_run=0
claim_seeds=""
names=()
overrides=()
while [ $# -gt 0 ]; do
  case "$1" in
    --) shift; overrides=("$@"); break ;;
    --scale) scale="$2"; shift 2 ;;
    --scale=*) scale="${1#*=}"; shift ;;
    --claim-seeds) claim_seeds="$2"; shift 2 ;;
    --claim-seeds=*) claim_seeds="${1#*=}"; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    -*) echo "reproduce.sh: unknown option $1" >&2; exit 2 ;;
    *) names+=("${1%.yaml}"); shift ;;
  esac
done
case "$scale" in cpu|paper) ;; *) echo "reproduce.sh: --scale must be cpu or paper" >&2; exit 2 ;; esac

if [ ${#names[@]} -eq 0 ]; then
  while IFS= read -r file; do
    names+=("${file#experiments/}")
  done < <(find experiments -mindepth 2 -maxdepth 2 -name '*.yaml' | sed 's/\.yaml$//' | sort)
fi
for name in "${names[@]}"; do
  [ -f "experiments/$name.yaml" ] || { echo "reproduce.sh: no experiment file experiments/$name.yaml" >&2; exit 2; }
done

bin="$PWD/.venv/bin"
[ -x "$bin/slimexp" ] || bin="$(dirname "$(command -v slimexp || echo /nonexistent)")"
[ -x "$bin/slimexp" ] || { echo "reproduce.sh: slimexp not found: run 'make install' first" >&2; exit 2; }
reports="${SLIMEXP_RESULTS_DIR:-results}/reports"
mkdir -p "$reports"

start=$(date +%s)
# One process composes every sweep point and checks the store: experiments whose runs
# are all done are not started again (a Hydra start per experiment costs seconds).
# Launcher and logging overrides do not change which runs a sweep asks for; the reports
# find each experiment's runs from the same sweep points.
science_overrides=(--override "scale=$scale")
for override in "${overrides[@]}"; do
  case "$override" in hydra*|logger*|runner*) ;; *) science_overrides+=(--override "$override") ;; esac
done
pending=$("$bin/python" -m slimexp.catalog pending "${science_overrides[@]}" "${names[@]}") \
  || { echo "reproduce.sh: the pending check failed (see above)" >&2; exit 2; }
todo=()
[ -z "$pending" ] || mapfile -t todo <<< "$pending"
echo "reproduce.sh: ${#todo[@]} of ${#names[@]} experiments have runs to do"
failed=()
for name in "${todo[@]}"; do
  echo "=== $name (scale=$scale) $(date +%T)"
  [ "$dry_run" -eq 1 ] && continue
  "$bin/slimexp" "experiment=$name" "scale=$scale" "${overrides[@]}" || failed+=("$name")
done
report_overrides=("${science_overrides[@]}")
if [ -n "$claim_seeds" ]; then
  echo "=== claim runs at seeds $claim_seeds $(date +%T)"
  seeds_args=("$bin/python" -m slimexp.catalog seeds "${names[@]}" --seeds "$claim_seeds" "${science_overrides[@]}")
  [ "$dry_run" -eq 1 ] && seeds_args+=(--dry-run)
  "${seeds_args[@]}" || failed+=("(claim seeds)")
  report_overrides+=(--override "seed=0,$claim_seeds")
fi
if [ "$dry_run" -eq 0 ]; then
  "$bin/python" -m slimexp.catalog report "${names[@]}" --output-dir "$reports" "${report_overrides[@]}" || failed+=("(reports)")
fi
elapsed=$(( $(date +%s) - start ))
echo "reproduce.sh: ${#names[@]} experiments, scale=$scale, ${elapsed} s wall"
if [ ${#failed[@]} -gt 0 ]; then
  printf 'reproduce.sh: failed: %s\n' "${failed[@]}" >&2
  exit 1
fi
