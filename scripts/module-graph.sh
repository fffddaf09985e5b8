#!/usr/bin/env bash
# Checks that the top-level modules of src/ depend on each other only downward
# (docs/ARCHITECTURE.md, "Layers"). The graph is derived from the source: every
# `crate::<module>` path outside comments, in code and in unit tests alike, is an
# arrow from the module of the file it is in to <module>. Run by `make lint`.
#
#   scripts/module-graph.sh          check; print each upward arrow and exit 1 if any
#   scripts/module-graph.sh --print  also print every arrow with its count (the graph)
set -euo pipefail
cd "$(dirname "$0")/.."

# Rank of each top-level module: an arrow may only go to a lower rank.
#   4 cli  3 fs gateway  2 read upload  1 backend  0 store
#  -1 shared leaves usable by every layer: the object model and errors (object),
#     the memory budget (memory), download buffers (buffers), counters (metrics),
#     heap tuning (allocator), URL percent-encoding (percent).
declare -A RANK=(
    [cli]=4
    [fs]=3 [gateway]=3
    [read]=2 [upload]=2
    [backend]=1
    [store]=0
    [object]=-1 [memory]=-1 [buffers]=-1 [metrics]=-1 [allocator]=-1 [percent]=-1
)

# Arrows allowed although they do not go to a lower rank, each with its reason.
declare -A ALLOWED=(
    # The heap trimmer watches the budget's activity (memory) and hands idle download
    # buffers back with the heap (buffers); neither of those uses the allocator module.
    [allocator:memory]=1
    [allocator:buffers]=1
)

print=0
[[ "${1:-}" == --print ]] && print=1

# Every `crate::x` outside `//` comments, as "from to" lines.
arrows=$(
    find src -name '*.rs' ! -path src/main.rs ! -path src/lib.rs | sort | while read -r f; do
        rel=${f#src/}
        from=${rel%%/*}
        from=${from%.rs}
        sed -e 's://.*$::' "$f" | grep -oE 'crate::(\{|[a-z_]+)' | sed -e 's/^crate:://' | while read -r to; do
            if [[ "$to" == "{" ]]; then
                echo "$f: 'use crate::{...}' hides which modules it names; write one path per module" >&2
                echo "ERROR ERROR"
                continue
            fi
            [[ "$to" == "$from" ]] || echo "$from $to"
        done
    done | sort | uniq -c
)

bad=0
while read -r count from to; do
    [[ -z "${count:-}" ]] && continue
    if [[ "$from" == ERROR ]]; then
        bad=1
        continue
    fi
    if [[ -z "${RANK[$from]+x}" || -z "${RANK[$to]+x}" ]]; then
        echo "unranked module in arrow $from -> $to: give it a rank in $0" >&2
        bad=1
        continue
    fi
    ok=0
    if ((RANK[$to] < RANK[$from])) || [[ -n "${ALLOWED[$from:$to]+x}" ]]; then
        ok=1
    fi
    ((print)) && printf '%-9s -> %-9s %4d%s\n' "$from" "$to" "$count" "$( ((ok)) || echo '  UPWARD')"
    if ((!ok)); then
        echo "upward arrow: $from -> $to ($count uses):" >&2
        grep -rnE "^[^/]*crate::$to\b" "src/$from" "src/$from.rs" 2>/dev/null | sed 's/^/    /' | head -5 >&2 || true
        bad=1
    fi
done <<<"$arrows"

if ((bad)); then
    echo "module graph: arrows must go down (cli -> fs/gateway -> read/upload -> backend -> store -> object and shared leaves); see docs/ARCHITECTURE.md" >&2
    exit 1
fi
echo "module graph: every arrow goes down"
