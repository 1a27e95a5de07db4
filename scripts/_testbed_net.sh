# shellcheck shell=bash
# Sourced by scripts/slurm-testbed: the cluster of two nodes. Debian's Slurm 22.05 is built
# without multiple-slurmd support, so each of its nodes is a slurmd in a network namespace
# of its own (`ip netns`), with its own address on a veth pair whose other end is on a
# bridge in the host's namespace. Its slurmctld stays in the host's namespace and answers
# on the bridge's address, which the host's commands (sbatch, the agents) also reach.
#
#   bridge $NET_TAG   $NET.1/24     slurmctld's ControlAddr
#   netns  $NET_TAG-<cluster>n1  eth0 $NET.11/24  slurmd -N <cluster>n1, hostname <cluster>n1
#   netns  $NET_TAG-<cluster>n2  eth0 $NET.12/24  slurmd -N <cluster>n2, hostname <cluster>n2
#
# Each slurmd also has a UTS namespace of its own (its hostname is its node name) and a
# mount namespace where /etc/netns/<netns>/hosts is /etc/hosts (both nodes' names), so a job
# sees a host of its own, and MASTER_ADDR=<cluster>n1 resolves on both nodes. Jobs there
# reach the other node and the controller, nothing beyond (no route out of $NET.0/24).
# Needs these globals of the script: BASE, PORT_BASE, NODE_CPUS, NODE_MEMORY, GPUS, log, die.

TWO_NODE="${FABBRICA_TESTBED_TWO_NODE-lumiaif}"  # its ClusterName; empty: no such cluster
NET_TAG="fabtb$PORT_BASE"  # the bridge, and the start of the namespaces' names
NET="${FABBRICA_TESTBED_NET:-10.$(((PORT_BASE >> 8) & 255)).$((PORT_BASE & 255))}"  # /24
[[ $NET =~ ^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$ ]] ||
    die "FABBRICA_TESTBED_NET is three numbers of an IPv4 /24 (10.26.164), not '$NET'"

multi_node() { [[ -n $TWO_NODE && $1 == "$TWO_NODE" ]]; }  # multi_node CLUSTER

cluster_nodes() {  # cluster_nodes CLUSTER: its node names, one a line
    printf '%sn1\n' "$1"
    if multi_node "$1"; then printf '%sn2\n' "$1"; fi
}

ctld_addr() { if multi_node "$1"; then echo "$NET.1"; else echo 127.0.0.1; fi; }

node_addr() {  # node_addr CLUSTER NODE
    multi_node "$1" || { echo 127.0.0.1; return; }
    echo "$NET.$((10 + ${2##*n}))"
}

node_lines() {  # node_lines CLUSTER MODEL HOST: its NodeName lines for slurm.conf
    local node name
    for node in $(cluster_nodes "$1"); do
        name=$3
        if multi_node "$1"; then name=$node; fi
        printf 'NodeName=%s NodeHostname=%s NodeAddr=%s CPUs=%d Boards=1 SocketsPerBoard=1' \
            "$node" "$name" "$(node_addr "$1" "$node")" "$NODE_CPUS"
        printf ' CoresPerSocket=%d ThreadsPerCore=1 RealMemory=%d Gres=gpu:%s:%d State=UNKNOWN\n' \
            "$NODE_CPUS" "$NODE_MEMORY" "$2" "$GPUS"
    done
}

slurmd_pidfile() {  # slurmd_pidfile CLUSTER NODE
    if multi_node "$1"; then echo "$BASE/$1/run/slurmd-$2.pid"; else echo "$BASE/$1/run/slurmd.pid"; fi
}

node_netns() { echo "$NET_TAG-$2"; }  # node_netns CLUSTER NODE

# net_up CLUSTER: the bridge, each node's namespace, veth pair and hosts file (idempotent).
net_up() {
    local cluster=$1 node ns veth addr hosts
    multi_node "$cluster" || return 0
    if ! ip link show "$NET_TAG" >/dev/null 2>&1; then
        log "creating bridge $NET_TAG ($NET.1/24) for $cluster"
        ip link add "$NET_TAG" type bridge
    fi
    ip -br addr show dev "$NET_TAG" | grep -qF " $NET.1/24" ||
        ip addr add "$NET.1/24" dev "$NET_TAG"
    ip link set "$NET_TAG" up
    hosts="127.0.0.1 localhost"$'\n'
    for node in $(cluster_nodes "$cluster"); do
        hosts+="$(node_addr "$cluster" "$node") $node"$'\n'
    done
    for node in $(cluster_nodes "$cluster"); do
        ns=$(node_netns "$cluster" "$node") addr=$(node_addr "$cluster" "$node")
        veth="$NET_TAG${node##*n}"  # the host's end; eth0 inside the namespace
        install -d -m 755 "/etc/netns/$ns"
        printf '%s' "$hosts" >"/etc/netns/$ns/hosts"
        ip netns list | grep -qE "^$ns( |$)" || ip netns add "$ns"
        if ! ip link show "$veth" >/dev/null 2>&1; then
            log "creating $ns ($addr) for node $node"
            ip netns exec "$ns" ip link del eth0 2>/dev/null || true
            ip link add "$veth" type veth peer name "${veth}p" netns "$ns"
            ip netns exec "$ns" ip link set "${veth}p" name eth0
        fi
        ip link set "$veth" master "$NET_TAG" up
        ip netns exec "$ns" ip link set lo up
        ip netns exec "$ns" ip -br addr show dev eth0 | grep -qF " $addr/24" ||
            ip netns exec "$ns" ip addr add "$addr/24" dev eth0
        ip netns exec "$ns" ip link set eth0 up
    done
}

# net_down CLUSTER: remove what net_up made (after its slurmds have stopped).
net_down() {
    local cluster=$1 node ns
    multi_node "$cluster" || return 0
    for node in $(cluster_nodes "$cluster"); do
        ns=$(node_netns "$cluster" "$node")
        ip link del "$NET_TAG${node##*n}" 2>/dev/null || true
        ip netns del "$ns" 2>/dev/null || true
        rm -rf "/etc/netns/$ns"
    done
    ip link del "$NET_TAG" 2>/dev/null || true
}

# in_node CLUSTER NODE COMMAND...: run COMMAND as that node (its namespaces), or as is.
# nsenter, not `ip netns exec`: that one also mounts a sysfs of the namespace's own, without
# /sys/fs/cgroup, and slurmd stops ("Unable to initialize cgroup plugin").
in_node() {
    local cluster=$1 node=$2 ns
    shift 2
    if multi_node "$cluster"; then
        ns=$(node_netns "$cluster" "$node")
        # shellcheck disable=SC2016  # $0, $1 and $@ are the inner shell's
        nsenter --net="/run/netns/$ns" unshare --mount --propagation slave --uts -- \
            /bin/sh -c 'mount --bind "$1" /etc/hosts && hostname "$0" && shift && exec "$@"' \
            "$node" "/etc/netns/$ns/hosts" "$@"
    else
        "$@"
    fi
}
