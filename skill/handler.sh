#!/bin/sh
# handler.sh — the bot-sync skill's handler, backed by botsync.
#
#   handler.sh status                        WORKSPACE   peers, reachability, parity
#   handler.sh sync|now [PEER]               WORKSPACE   two-way sync (every peer without PEER)
#   handler.sh push [PEER]                   WORKSPACE   send our changes only
#   handler.sh pull [PEER]                   WORKSPACE   take theirs only
#   handler.sh diff [PEER]                   WORKSPACE   what a sync would do, nothing written
#   handler.sh add NAME HOST[:PORT] PEER_ID  WORKSPACE   add a peer (its id: `botsync id` there)
#   handler.sh remove NAME                   WORKSPACE   remove a peer
#   handler.sh history                       WORKSPACE   sync history
#   handler.sh auto on|off                   WORKSPACE   sync on its own (starts the daemon)
#   handler.sh discover                      WORKSPACE   tailnet peers running botsync
#
# The last argument is always the workspace. Output is meant to be read in a chat; the exit
# code is botsync's (0 ok, 1 failed, 2 usage, 3 done but attention needed). $BOTSYNC names the
# binary (default: botsync on the PATH). jq, when present, gives the sync summary its list form.

BOTSYNC=${BOTSYNC:-botsync}

usage() {
    echo "usage: handler.sh status|sync|now|push|pull|diff|add|remove|history|auto|discover [ARGS] WORKSPACE" >&2
    exit 2
}

[ $# -ge 2 ] || usage
cmd=$1
shift
# The workspace is the last argument; the rest are the command's.
ws=$(eval "printf '%s' \"\${$#}\"")
args=""
n=1
while [ "$n" -lt $# ]; do
    args="$args \"\${$n}\""
    n=$((n + 1))
done
eval "set -- $args"

bs() { "$BOTSYNC" -w "$ws" "$@"; }

have_jq() { command -v jq >/dev/null 2>&1; }

# One peer's host:port, for the "Syncing with NAME (HOST)" line.
host_of() {
    bs --json peers 2>/dev/null | jq -r --arg n "$1" '.peers[] | select(.name == $n) | "\(.host):\(.port)"'
}

# sync/push/pull: a chat summary of what moved.
transfer() {
    mode=$1
    shift
    case $mode in
        sync) verb="Syncing with" ;;
        push) verb="Pushing to" ;;
        pull) verb="Pulling from" ;;
    esac
    if ! have_jq; then
        echo "🔄 $verb ${1:-all peers}..."
        bs "$mode" "$@"
        code=$?
        [ $code -eq 0 ] && echo "✅ Done." || echo "❌ botsync exited with $code (see above)."
        return $code
    fi
    if [ -n "${1:-}" ]; then
        echo "🔄 $verb $1 ($(host_of "$1"))..."
    else
        echo "🔄 $verb all peers..."
    fi
    out=$(bs --json "$mode" "$@" 2>/dev/null)
    code=$?
    printf '%s\n' "$out" | jq -r '
        if .ok == false and .peers == null then "❌ \(.error)" else
        (.peers[] |
          if .ok then
            "",
            (if .in_sync then "   \(.peer): already in sync" else
              ([.pushed[] | select(.action == "take" or .action == "delete" or .action == "take-conflict")] as $out |
               [.pulled[] | select(.action == "take" or .action == "delete" or .action == "take-conflict")] as $in |
               (if ($out | length) > 0 then "📤 Pushed to \(.peer): \($out | length) files changed", ($out[] | "   • \(.path)") else empty end),
               (if ($in | length) > 0 then "📥 Pulled from \(.peer): \($in | length) files changed", ($in[] | "   • \(.path)") else empty end))
             end)
          else "❌ \(.peer): \(.error)" end),
        (.skipped[]? | "⚠️  \(.path) not synced: \(.reason) (\(.what_to_do))"),
        "",
        ([.peers[] | select(.ok) | ((.pushed + .pulled)[] | select(.action == "take" or .action == "delete" or .action == "take-conflict"))] | length) as $n |
        if .ok then "✅ Sync complete! \($n) files synchronized." else "❌ Some peers failed (see above)." end
        end'
    return $code
}

case $cmd in
    status)
        echo "🔄 botsync status"
        bs status
        ;;
    sync|now) transfer sync "$@" ;;
    push) transfer push "$@" ;;
    pull) transfer pull "$@" ;;
    diff)
        echo "🔍 What a sync would do (nothing is written):"
        bs diff "$@"
        ;;
    add)
        if [ $# -ne 3 ]; then
            echo "❌ add needs NAME HOST[:PORT] PEER_ID; run \`botsync id\` on that machine for its id (or \`handler.sh discover WORKSPACE\`)" >&2
            exit 2
        fi
        bs add "$1" "$2" --id "$3" && echo "✅ Peer $1 added."
        ;;
    remove)
        [ $# -eq 1 ] || usage
        bs remove "$1" && echo "✅ Peer $1 removed."
        ;;
    history)
        echo "📜 Sync history"
        bs history "$@"
        ;;
    auto)
        [ $# -eq 1 ] || usage
        bs auto "$1"
        ;;
    discover)
        echo "🔎 Tailnet peers running botsync"
        bs discover "$@"
        ;;
    *) usage ;;
esac
