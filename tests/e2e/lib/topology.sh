# shellcheck shell=bash
# The network of the e2e harness: namespaces, veth pairs, bridges, routes and NAT rules.
# Sourced by tests/e2e/run.sh (the picture is at the top of that file).

PUBLIC_IP=203.0.113.10    # the edge router: the server side's public address
NAT1_IP=203.0.113.11      # client LAN 1's public address (MASQUERADE)
NAT2_IP=203.0.113.12      # client LAN 2's public address (MASQUERADE)
STRAY_IP=203.0.113.66     # some other host on the internet
PROXY_IP=10.10.0.2        # ftpfront, in the DMZ behind the edge
C1_IP=192.168.1.2
C1B_IP=192.168.1.3
C2_IP=192.168.2.2

NAMESPACES=(wan edge proxy backend nat1 nat2 c1 c1b c2 stray)

# Runs a command inside namespace ffe-NAME.
in_ns() {
    local name=$1
    shift
    ip netns exec "$E2E_PREFIX-$name" "$@"
}

create_namespace() {
    ip netns add "$E2E_PREFIX-$1"
    ip -n "$E2E_PREFIX-$1" link set lo up
}

# wire NS_A IF_A NS_B IF_B: a veth pair from namespace A to namespace B, both ends up.
wire() {
    ip link add "$2" netns "$E2E_PREFIX-$1" type veth peer name "$4" netns "$E2E_PREFIX-$3"
    ip -n "$E2E_PREFIX-$1" link set "$2" up
    ip -n "$E2E_PREFIX-$3" link set "$4" up
}

address() { ip -n "$E2E_PREFIX-$1" addr add "$3" dev "$2"; }
default_route() { ip -n "$E2E_PREFIX-$1" route add default via "$2"; }

bridge() {
    ip -n "$E2E_PREFIX-$1" link add "$2" type bridge
    ip -n "$E2E_PREFIX-$1" link set "$2" up
}

# plug_into_wan HOST ADDRESS: HOST gets ADDRESS/24 on the internet bridge.
plug_into_wan() {
    local host=$1 ip=$2
    wire "$host" "ffe-$host-wan" wan "ffe-wan-$host"
    ip -n "$E2E_PREFIX-wan" link set "ffe-wan-$host" master ffe-br-wan
    address "$host" "ffe-$host-wan" "$ip/24"
}

# net.ipv4.ip_forward=1 in that namespace (without needing sysctl from procps).
enable_forwarding() { in_ns "$1" sh -c 'echo 1 >/proc/sys/net/ipv4/ip_forward'; }

# A home router: LAN behind MASQUERADE, nothing comes in unless it answers something that
# went out, and NO default route: like a client on the internet, it cannot reach anybody's
# private addresses (a 10.20.x address in a 227 reply is unreachable from here).
make_client_nat() {
    local router=$1 lan_if=$2 wan_if=$3
    enable_forwarding "$router"
    in_ns "$router" iptables -t nat -A POSTROUTING -o "$wan_if" -j MASQUERADE
    in_ns "$router" iptables -P FORWARD DROP
    in_ns "$router" iptables -A FORWARD -i "$lan_if" -o "$wan_if" -j ACCEPT
    in_ns "$router" iptables -A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
}

# The server side's router: owns the public address and forwards (DNAT) only what chain
# PUBLISHED says (see edge_publishes_*); the DMZ and the backend LAN go out via MASQUERADE.
make_edge_router() {
    enable_forwarding edge
    in_ns edge iptables -t nat -N PUBLISHED
    in_ns edge iptables -t nat -A PREROUTING -i ffe-edge-wan -d "$PUBLIC_IP" -j PUBLISHED
    in_ns edge iptables -t nat -A POSTROUTING -o ffe-edge-wan -j MASQUERADE
    in_ns edge iptables -P FORWARD DROP
    in_ns edge iptables -A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
    in_ns edge iptables -A FORWARD -i ffe-edge-wan -m conntrack --ctstate DNAT -j ACCEPT
    in_ns edge iptables -A FORWARD ! -i ffe-edge-wan -j ACCEPT
}

build_topology() {
    local n
    for n in "${NAMESPACES[@]}"; do create_namespace "$n"; done

    # The internet: one bridge joining the edge, both client NATs and a stray host.
    bridge wan ffe-br-wan
    plug_into_wan edge "$PUBLIC_IP"
    plug_into_wan nat1 "$NAT1_IP"
    plug_into_wan nat2 "$NAT2_IP"
    plug_into_wan stray "$STRAY_IP"

    # Client LAN 1 (two hosts on a bridge in its router), client LAN 2 (one host).
    bridge nat1 ffe-br-lan1
    address nat1 ffe-br-lan1 192.168.1.1/24
    wire c1 ffe-c1-lan nat1 ffe-lan1-c1
    wire c1b ffe-c1b-lan nat1 ffe-lan1-c1b
    ip -n "$E2E_PREFIX-nat1" link set ffe-lan1-c1 master ffe-br-lan1
    ip -n "$E2E_PREFIX-nat1" link set ffe-lan1-c1b master ffe-br-lan1
    address c1 ffe-c1-lan "$C1_IP/24"
    address c1b ffe-c1b-lan "$C1B_IP/24"
    default_route c1 192.168.1.1
    default_route c1b 192.168.1.1
    make_client_nat nat1 ffe-br-lan1 ffe-nat1-wan

    wire c2 ffe-c2-lan nat2 ffe-lan2-c2
    address nat2 ffe-lan2-c2 192.168.2.1/24
    address c2 ffe-c2-lan "$C2_IP/24"
    default_route c2 192.168.2.1
    make_client_nat nat2 ffe-lan2-c2 ffe-nat2-wan

    # Server side: edge -> DMZ (ftpfront) and edge -> backend LAN (the FTP servers).
    wire edge ffe-edge-dmz proxy ffe-proxy-dmz
    address edge ffe-edge-dmz 10.10.0.1/24
    address proxy ffe-proxy-dmz "$PROXY_IP/24"
    default_route proxy 10.10.0.1

    wire edge ffe-edge-be backend ffe-be-lan
    address edge ffe-edge-be 10.20.0.1/24
    for n in "${!SERVER_IP[@]}"; do address backend ffe-be-lan "${SERVER_IP[$n]}/24"; done
    default_route backend 10.20.0.1

    make_edge_router
}

# Scenarios 1 and 8's edge: port 21 goes straight to one FTP server on IP:PORT (default 21),
# no ftpfront.
edge_publishes_server() {
    local ip=$1 port=${2:-21}
    in_ns edge iptables -t nat -F PUBLISHED
    in_ns edge iptables -t nat -A PUBLISHED -p tcp --dport 21 -j DNAT --to-destination "$ip:$port"
}

# The edge as ftpfront wants it: port 21 and ONE fixed passive range (FIRST-LAST) go to
# ftpfront, nothing else; plus the control PORTS given after them (FTPS rows: 990).
edge_publishes_proxy() {
    local first=$1 last=$2 port
    shift 2
    in_ns edge iptables -t nat -F PUBLISHED
    for port in 21 "$@"; do
        in_ns edge iptables -t nat -A PUBLISHED -p tcp --dport "$port" -j DNAT --to-destination "$PROXY_IP:$port"
    done
    in_ns edge iptables -t nat -A PUBLISHED -p tcp --dport "$first:$last" -j DNAT --to-destination "$PROXY_IP"
}

# Kills whatever runs in our namespaces and deletes them (also leftovers of a killed run).
remove_topology() {
    local ns pids
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$E2E_PREFIX-" || true); do
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        if [[ -n "$pids" ]]; then
            # shellcheck disable=SC2086
            kill -TERM $pids 2>/dev/null || true
            sleep 0.3
            pids=$(ip netns pids "$ns" 2>/dev/null || true)
            # shellcheck disable=SC2086
            [[ -z "$pids" ]] || kill -KILL $pids 2>/dev/null || true
        fi
        ip netns del "$ns" 2>/dev/null || true
    done
}
