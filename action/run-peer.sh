#!/usr/bin/env bash
# One bounded xmesh-agent peer for the GitHub Action (action.yml), runnable by hand as well:
# scaffold or take a config, dry-run it, run it with a deadline and a cost cap, set the outputs.
# Inputs come as INPUT_* environment variables; outputs go to $GITHUB_OUTPUT (a file).
set -euo pipefail

out="${GITHUB_OUTPUT:?GITHUB_OUTPUT must name the file the outputs are written to}"
work="${RUNNER_TEMP:-${TMPDIR:-/tmp}}/xmesh-agent-${GITHUB_RUN_ID:-local}"
mkdir -p "$work"
duration="${INPUT_DURATION_SECONDS:-300}"
cap="${INPUT_COST_CAP_USD:-1.00}"
number='^[0-9]+([.][0-9]+)?$'
if ! [[ "$duration" =~ $number ]] || [ "${duration//[.0]/}" = "" ]; then
  echo "::error::duration-seconds must be a positive number of seconds (got '$duration')"
  exit 2
fi
if ! [[ "$cap" =~ $number ]] || [ "${cap//[.0]/}" = "" ]; then
  echo "::error::cost-cap-usd must be a positive number of USD (got '$cap')"
  exit 2
fi

# A key input overrides the job's environment only when it is given.
[ -n "${INPUT_ANTHROPIC_API_KEY:-}" ] && export ANTHROPIC_API_KEY="$INPUT_ANTHROPIC_API_KEY"
[ -n "${INPUT_OPENAI_API_KEY:-}" ] && export OPENAI_API_KEY="$INPUT_OPENAI_API_KEY"
[ -n "${INPUT_MISTRAL_API_KEY:-}" ] && export MISTRAL_API_KEY="$INPUT_MISTRAL_API_KEY"

if [ -n "${INPUT_CONFIG:-}" ]; then
  config="$INPUT_CONFIG"
  if [ ! -f "$config" ]; then
    echo "::error::config file not found: $config (relative to $(pwd))"
    exit 1
  fi
else
  peer="${INPUT_PEER_NAME:-}"
  [ -n "$peer" ] || peer="${INPUT_ROLE:-reviewer}-${GITHUB_RUN_ID:-local}"
  config="$work/$peer.toml"
  # init derives per hour = cap/2 and per day = cap x 2 from --cost-cap; a CI run is shorter than an
  # hour, so scaffold with twice the cap (hour = cap) and let `run --max-cost` hold the run to the cap.
  scaffold_cap=$(awk -v c="$cap" 'BEGIN { printf "%.6f", c * 2 }')
  args=(init "$peer" --role "${INPUT_ROLE:-reviewer}" --adapter "${INPUT_ADAPTER:-anthropic}"
        --group "${INPUT_GROUP:-xmesh-ci}" --cost-cap "$scaffold_cap" --out "$config" --force)
  [ -n "${INPUT_MODEL:-}" ] && args+=(--model "$INPUT_MODEL")
  xmesh-agent "${args[@]}"
  # A runner's peers meet through the same-host registry (or a relay, in a given config): DNS-SD does
  # not cross runners, and a self-hosted runner's LAN is not the job's mesh. Keep the peer on the runner.
  awk '{ print } $0 == "[mesh]" { print "host = \"127.0.0.1\""; print "discovery = [\"registry\"]" }' \
    "$config" > "$config.tmp"
  cat "$config.tmp" > "$config" && rm -f "$config.tmp"
fi
echo "config-path=$config" >> "$out"

xmesh-agent dry-run --config "$config"

summary="$work/summary.json"
log="$work/peer.log"
rm -f "$summary"
echo "::group::xmesh-agent run (at most ${duration} s, at most \$${cap})"
xmesh-agent run --config "$config" --duration "$duration" --max-cost "$cap" --summary "$summary" \
  > "$log" 2>&1 &
pid=$!
# Backstop: the peer stops itself at the deadline; if its drain hangs, SIGTERM (then SIGKILL) it.
# (It is killed when the peer exits, its sleep with it, and it holds none of the step's output pipes.)
(
  trap 'kill "$nap" 2>/dev/null; exit 0' TERM
  sleep $(( ${duration%.*} + 90 )) & nap=$!; wait "$nap"
  kill -TERM "$pid"; sleep 30 & nap=$!; wait "$nap"
  kill -KILL "$pid"
) > /dev/null 2>&1 &
watchdog=$!
code=0
wait "$pid" || code=$?
kill "$watchdog" 2>/dev/null || true
cat "$log"
echo "::endgroup::"

if [ ! -f "$summary" ]; then
  echo "::error::the peer wrote no run summary (exit $code); its log is above"
  printf 'cmbs-emitted=0\nwakes=0\ncost-usd=0\nstop-reason=error\n' >> "$out"
  exit $(( code == 0 ? 1 : code ))
fi
python3 - "$summary" "$out" "${GITHUB_STEP_SUMMARY:-/dev/null}" <<'PY'
import json
import sys

summary, out, step_summary = sys.argv[1:4]
s = json.load(open(summary, encoding="utf-8"))
cost = f"{s['cost_usd']:.6f}"
with open(out, "a", encoding="utf-8") as fh:
    fh.write(f"cmbs-emitted={s['cmbs_emitted']}\nwakes={s['wakes']}\ncost-usd={cost}\n")
    fh.write(f"stop-reason={s['stop_reason']}\n")
if s["unpriced_calls"]:
    print(f"::warning::{s['unpriced_calls']} model call(s) had no known price: cost-usd leaves them out "
          "(set [model] price_input_per_mtok / price_output_per_mtok)")
outcomes = ", ".join(f"{k} {v}" for k, v in sorted(s["wakes_by_outcome"].items())) or "none"
with open(step_summary, "a", encoding="utf-8") as fh:
    fh.write(f"### xmesh-agent peer `{s['peer']}`\n\n| | |\n|---|---|\n"
             f"| wakes | {s['wakes']} ({outcomes}) |\n| CMBs emitted | {s['cmbs_emitted']} |\n"
             f"| cost | ${cost} of ${s['max_cost_usd']} |\n| model calls | {s['model_calls']} |\n"
             f"| stopped by | {s['stop_reason']} after {s['duration_seconds']} s |\n")
print(f"peer {s['peer']}: {s['wakes']} wakes, {s['cmbs_emitted']} CMBs emitted, ${cost}, "
      f"stopped by {s['stop_reason']}")
PY
exit "$code"
