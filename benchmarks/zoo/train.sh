#!/usr/bin/env bash
# Train (or resume) the reference zoo: every config in robustbench_rl/zoo/configs x seeds 0,1,2.
#
#   nohup bash benchmarks/zoo/train.sh runs/zoo 2 > runs/zoo/train.log 2>&1 &
#
# Arguments: the output root (default runs/zoo) and how many runs train at once (default 2). Each
# run is OUT/NAME/seed_S. A finished run (its policy.safetensors exists) is skipped, a stopped one
# continues with --resume from its last checkpoint, so re-running this script picks everything up.
# ZOO_JOBS="hopper-td3 invpend-ppo" limits it to some configs; ZOO_RUNS="hopper-ppo:0 invpend-td3:2"
# names exact runs, trained in that order; RBRL (default: rbrl) is the command. A run whose policy
# already ships in robustbench_rl/zoo is skipped.
set -euo pipefail
out=${1:-runs/zoo}
parallel=${2:-2}
zoo="$(cd "$(dirname "$0")/../../robustbench_rl/zoo" && pwd)"
configs="$zoo/configs"
rbrl=${RBRL:-rbrl}
jobs=${ZOO_JOBS:-"invpend-td3 invpend-oa-td3 invpend-ppo invpend-oa-ppo invpend-oa-td3-nosurgery invpend-oa-td3-eps0.05 invpend-oa-td3-eps0.2 hopper-td3 hopper-oa-td3 hopper-ppo hopper-oa-ppo hopper-oa-td3-paper walker2d-td3 walker2d-oa-td3 walker2d-ppo walker2d-oa-ppo"}
mkdir -p "$out"

one() {  # one NAME SEED: train, resume or skip one run
    local name=$1 seed=$2 dir="$out/$1/seed_$2"
    if [[ -f "$dir/policy.safetensors" || -f "$zoo/$name-s$seed.safetensors" ]]; then
        echo "$(date -Is) done     $name s$seed"; return
    fi
    mkdir -p "$out/$name"
    # One trainer per run: a second copy of this script (or a second chain) skips a run in flight
    # instead of deleting its directory from under it.
    exec 9> "$out/$name/seed_$seed.lock"
    if ! flock -n 9; then echo "$(date -Is) busy     $name s$seed (another trainer holds it)"; return; fi
    local resume=""
    if [[ -f "$dir/state.pt" ]]; then resume="--resume"; else rm -rf "$dir"; fi
    echo "$(date -Is) start    $name s$seed $resume"
    if "$rbrl" train --config "$configs/$name.toml" --seed "$seed" --out "$dir" $resume --no-progress \
        > "$out/$name/seed_$seed.log" 2>&1; then
        echo "$(date -Is) finished $name s$seed"
    else
        echo "$(date -Is) FAILED   $name s$seed (see $out/$name/seed_$seed.log)"
    fi
}
export -f one
export out zoo configs rbrl

if [[ -n ${ZOO_RUNS:-} ]]; then
    for run in $ZOO_RUNS; do echo "${run%:*} ${run##*:}"; done | xargs -P "$parallel" -L 1 bash -c 'one "$0" "$1"'
    exit
fi
# Seeds outermost within each env, so one seed of every algorithm finishes before the second seeds.
for env in invpend hopper walker2d; do
    for seed in 0 1 2; do
        for name in $jobs; do
            [[ $name == "$env"-* ]] && echo "$name $seed"
        done
    done
done | xargs -P "$parallel" -L 1 bash -c 'one "$0" "$1"'
